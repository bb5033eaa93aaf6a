"""`flowledger api` (the HTTP API and the inbox, in the foreground) and `flowledger api
token create`."""

from __future__ import annotations

import typer

from flowledger import logs
from flowledger.cli import context
from flowledger.cli.output import JSON_FLAG, console, err_console, print_json, refusals

app = typer.Typer(
    help="Serve the HTTP API and the human-task inbox until Ctrl-C (API__HOST, API__PORT).",
    invoke_without_command=True,
)
token_app = typer.Typer(help="Bearer tokens of the API (kept hashed in the tokens file).")
app.add_typer(token_app, name="token")


@app.callback()
def api(ctx: typer.Context) -> None:
    """Serve the API (API__HOST, API__PORT) until Ctrl-C; /docs has its reference."""
    if ctx.invoked_subcommand is not None:
        return
    from flowledger.api import server

    settings = context.settings(ctx)
    logs.configure(settings)
    with refusals(False):
        server.serve(settings, lambda url: err_console.print(f"api on {url} (docs: {url}/docs)"))


@token_app.command("create")
def create(
    ctx: typer.Context,
    tenant: list[str] = typer.Option(..., "--tenant", help="A tenant it acts for (repeatable)."),
    role: str = typer.Option(..., "--role", help="publisher, operator or reader."),
    name: str | None = typer.Option(None, "--name", help="Recorded as who made a request."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Create a token; it is printed this once and stored only as its SHA-256."""
    from flowledger.api import tokens

    settings = context.settings(ctx)
    path = settings.api.resolved_tokens_file(settings.stack.state_dir.resolve())
    with refusals(as_json):
        wanted = [part for given in tenant for part in given.split(",")]
        created = tokens.create(path, tenants=wanted, role=role, name=name)
    if as_json:
        print_json({"token": created["token"]})
        return
    console.print(created["token"])
    err_console.print(
        f"{created['role']} token {created['name']} for {', '.join(created['tenants'])} "
        f"(stored hashed in {path}; it is not shown again)"
    )
