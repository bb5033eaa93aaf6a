"""`POST /v1/events`: one envelope, or NDJSON for a batch, validated with the same
model as `flowledger publish`; all published (202) or none (422 with every problem).
A batch that is sent is in the operator audit, one record per tenant it publishes for."""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from flowledger.api import bodies
from flowledger.api.auth import PUBLISH, check_tenants, require
from flowledger.api.tokens import Principal
from flowledger.codes import API_EVENTS_REFUSED
from flowledger.errors import FlowledgerError
from flowledger.operations.audit_trail import Request as Audited
from flowledger.operations.audit_trail import audited
from flowledger.settings import Settings
from schemas.envelope import EventEnvelope
from topics.publisher import parse_lines, publish


class EventsRefused(FlowledgerError):
    code = API_EVENTS_REFUSED
    status = 422


def _publish(settings: Settings, principal: Principal, text: str) -> list[dict[str, Any]]:
    parsed = parse_lines(text, settings.records)
    if not parsed:
        raise EventsRefused(
            "no event in the body",
            errors=[{"line": 1, "error": {"code": API_EVENTS_REFUSED, "message": "empty body"}}],
        )
    refused = [
        {"line": n, "error": item.to_dict()}
        for n, item in parsed
        if not isinstance(item, EventEnvelope)
    ]
    if refused:
        raise EventsRefused(
            f"{len(refused)} of {len(parsed)} event(s) refused; none was published",
            errors=refused,
        )
    good = [(n, item) for n, item in parsed if isinstance(item, EventEnvelope)]
    check_tenants(principal, (envelope.tenant for _, envelope in good))
    # The events topic holds the events but not which token sent them: that is the
    # operator audit's. A record per tenant, so that each tenant's tokens see theirs.
    counts = Counter(envelope.tenant for _, envelope in good)
    with ExitStack() as stack:
        for tenant, count in sorted(counts.items()):
            request = Audited("publish", principal.name, tenant=tenant, details={"events": count})
            stack.enter_context(audited(settings, request))
        return [p.as_dict() for p in publish(settings, good)]


def router(settings: Settings) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["events"])

    @routes.post(
        "/events",
        status_code=202,
        summary="Publish one event envelope (JSON) or a batch (NDJSON)",
        responses={422: {"description": "every refused line, nothing published"}},
    )
    async def post_events(
        request: Request, principal: Principal = Depends(require(PUBLISH))
    ) -> JSONResponse:
        raw = await bodies.read(request, settings)
        text = raw.decode("utf-8", "replace")
        published = await run_in_threadpool(_publish, settings, principal, text)
        return JSONResponse(published, status_code=202)

    return routes
