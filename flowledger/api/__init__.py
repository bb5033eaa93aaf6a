"""`flowledger api`: the CLI's operations over HTTP (FastAPI on uvicorn), bearer tokens
bound to tenants and roles, and the server-rendered human-task inbox."""
