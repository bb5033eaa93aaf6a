"""The FastAPI application: the v1 endpoints, the inbox pages, health and metrics, and
one mapping from flowledger's errors to HTTP answers (the error's status, its
`to_dict()` as the body: the same document the CLI prints under "error")."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from flowledger.api import (
    definitions_routes,
    events_routes,
    health,
    inbox,
    reads_routes,
    runs_routes,
)
from flowledger.api.tokens import TokenStore
from flowledger.codes import API_NOT_FOUND, API_REQUEST_INVALID
from flowledger.errors import FlowledgerError
from flowledger.settings import Settings


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="flowledger",
        version="1",
        description="Kafka-native workflow runtime: events, definitions, runs, tasks, audit.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    state_dir = settings.stack.state_dir.resolve()
    app.state.tokens = TokenStore(settings.api.resolved_tokens_file(state_dir))
    metrics = health.ApiMetrics()
    app.state.metrics = metrics
    health.instrument(app, metrics)

    @app.exception_handler(FlowledgerError)
    async def flowledger_error(_request: Request, exc: FlowledgerError) -> Any:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if inbox.wants_page(_request):
            return inbox.error_page(exc)
        return _answer(exc.status, exc.to_dict(), headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_request: Request, exc: RequestValidationError) -> Any:
        problems = [
            {"path": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg")}
            for e in exc.errors()
        ]
        body = {
            "code": API_REQUEST_INVALID,
            "message": f"the request does not have the expected shape: {len(problems)} problem(s)",
            "status": 422,
            "errors": problems,
        }
        return _answer(422, body)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Any:
        code = API_NOT_FOUND if exc.status_code == 404 else API_REQUEST_INVALID
        body = {"code": code, "message": str(exc.detail), "status": exc.status_code}
        return _answer(exc.status_code, body)

    app.include_router(health.router(settings, metrics))
    app.include_router(events_routes.router(settings))
    app.include_router(definitions_routes.router(settings))
    app.include_router(runs_routes.router(settings))
    app.include_router(reads_routes.router(settings))
    app.include_router(inbox.router(settings))
    return app
