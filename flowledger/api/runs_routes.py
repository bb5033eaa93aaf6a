"""Runs over HTTP: start, list (with a cursor), show, and run control, through the
same operations as `flowledger runs …` and into the operator audit. A run of a tenant
outside the token is answered 404, as an unknown run is."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from flowledger.api.auth import OPERATE, READ, check_tenants, require, tenant_scope
from flowledger.api.tokens import Principal
from flowledger.codes import API_CURSOR_INVALID
from flowledger.errors import InvalidInput
from flowledger.operations import run_actions
from flowledger.settings import Settings
from projections import db, lookups, queries

NEXT_CURSOR = "X-Next-Cursor"


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition_id: str = Field(min_length=1)
    tenant: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=1)


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str


def visible_run(settings: Settings, principal: Principal, run_id: str) -> None:
    tenant = lookups.tenant_of(settings.database_url(), run_id)
    if tenant is None or tenant not in principal.tenants:
        raise queries.RunNotFound(run_id)


def _encode_cursor(run: dict[str, Any]) -> str:
    raw = json.dumps([run["updated_at"], run["run_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> queries.RunCursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, run_id = json.loads(raw)
        return datetime.fromisoformat(at), str(run_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidInput(
            "not a cursor this API handed out", code=API_CURSOR_INVALID, status=422
        ) from exc


def _status(status: str | None) -> str | None:
    return queries.run_status(status, "status", status=422)


def router(settings: Settings) -> APIRouter:
    routes = APIRouter(prefix="/v1/runs", tags=["runs"])

    @routes.post("", status_code=201, summary="Start a run of a published definition")
    def start(body: StartRequest, principal: Principal = Depends(require(OPERATE))) -> Any:
        check_tenants(principal, [body.tenant])
        return run_actions.start_run(
            settings,
            tenant=body.tenant,
            definition_id=body.definition_id,
            data=body.input,
            version=body.version,
            requested_by=principal.name,
        )

    @routes.get("", summary="Runs, most recently changed first; the next page via X-Next-Cursor")
    def list_runs(
        request: Request,
        tenant: str | None = None,
        definition: str | None = None,
        status: str | None = None,
        correlation_key: str | None = None,
        cursor: str | None = None,
        limit: int = Query(settings.api.page_size, ge=1, le=10_000),
        principal: Principal = Depends(require(READ)),
    ) -> JSONResponse:
        wanted = _status(status)
        after = _decode_cursor(cursor) if cursor else None
        with db.reading(settings.database_url()) as conn:
            runs = queries.list_runs(
                conn,
                tenant=tenant_scope(principal, tenant),
                status=wanted,
                definition_id=definition,
                correlation_key=correlation_key,
                after=after,
                limit=limit + 1,
            )
        headers = {}
        if len(runs) > limit:
            runs = runs[:limit]
            token = _encode_cursor(runs[-1])
            query = {k: v for k, v in request.query_params.items() if k != "cursor"}
            headers[NEXT_CURSOR] = token
            headers["Link"] = (
                f'<{request.url.path}?{urlencode({**query, "cursor": token})}>; rel="next"'
            )
        return JSONResponse(runs, headers=headers)

    @routes.get("/{run_id}", summary="One run with its steps, waits and logs")
    def show(run_id: str, principal: Principal = Depends(require(READ))) -> dict[str, Any]:
        visible_run(settings, principal, run_id)
        with db.reading(settings.database_url()) as conn:
            return queries.show_run(conn, run_id)

    for action in run_actions.ACTIONS:
        routes.add_api_route(
            f"/{{run_id}}/{action}",
            _control(settings, action),
            methods=["POST"],
            summary=f"runs {action}",
            responses={404: {"description": "no such run"}, 409: {"description": "refused"}},
        )
    return routes


def _control(settings: Settings, action: str) -> Any:
    def control(
        run_id: str, body: ControlRequest, principal: Principal = Depends(require(OPERATE))
    ) -> dict[str, Any]:
        visible_run(settings, principal, run_id)
        return run_actions.control_run(
            settings, action, run_id, reason=body.reason, requested_by=principal.name
        )

    control.__name__ = f"run_{action}"
    return control
