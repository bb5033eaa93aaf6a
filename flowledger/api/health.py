"""The API's /metrics, /healthz and /readyz, served by the API itself on its own port,
with the request families every scrape of it finds."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from flowledger.settings import Settings
from projections import db

SERVICE = "api"


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flowledger_api_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "flowledger_api_request_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            registry=self.registry,
        )


def instrument(app: FastAPI, metrics: ApiMetrics) -> None:
    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The template, not the path: run ids would make the label set unbounded.
        name = getattr(route, "path", None) or "unmatched"
        metrics.requests.labels(request.method, name, str(response.status_code)).inc()
        metrics.seconds.labels(name).observe(time.perf_counter() - began)
        return response


def _database_ok(settings: Settings) -> bool:
    try:
        with db.reading(settings.database_url()) as conn:
            conn.execute(text("select 1"))
    except Exception:
        return False
    return True


def router(settings: Settings, metrics: ApiMetrics) -> APIRouter:
    routes = APIRouter(include_in_schema=False)

    @routes.get("/metrics")
    def metrics_text() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @routes.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"alive": True, "service": SERVICE}

    @routes.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        checks = {
            "database": await run_in_threadpool(_database_ok, settings),
            "tokens": await run_in_threadpool(request.app.state.tokens.check),
        }
        ok = all(checks.values())
        body = {"ready": ok, "checks": checks, "service": SERVICE}
        return JSONResponse(body, status_code=200 if ok else 503)

    return routes
