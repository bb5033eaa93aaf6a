"""`POST /v1/definitions:validate`, `POST /v1/definitions`, `GET /v1/definitions`: the
same checks and records as `flowledger definitions validate|publish|list`. A publish
that gets past parsing is in the operator audit, accepted or refused."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from flowledger.api import bodies
from flowledger.api.auth import PUBLISH, READ, check_tenants, require, tenant_scope
from flowledger.api.tokens import Principal
from flowledger.errors import FlowledgerError
from flowledger.operations import definition_actions
from flowledger.operations.audit_trail import Request as Audited
from flowledger.operations.audit_trail import audited
from flowledger.settings import Settings
from projections import db, queries
from workflows.definitions.validate import DefinitionInvalid


def _document(raw: bytes, settings: Settings, principal: Principal) -> dict[str, Any]:
    try:
        document = definition_actions.parse(raw, "the body", settings)
    except DefinitionInvalid:
        raise
    except FlowledgerError as exc:
        exc.status = 422
        raise
    tenant = document.get("tenant")
    if isinstance(tenant, str):
        check_tenants(principal, [tenant])
    return document


def _invalid(exc: DefinitionInvalid) -> JSONResponse:
    return JSONResponse(exc.to_dict() | {"status": 422}, status_code=422)


def router(settings: Settings) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["definitions"])

    @routes.post("/definitions:validate", summary="Check a definition; list every problem")
    async def validate(request: Request, principal: Principal = Depends(require(READ))) -> Any:
        raw = await bodies.read(request, settings)

        def go() -> dict[str, Any]:
            return definition_actions.validate(_document(raw, settings, principal), settings)

        try:
            return await run_in_threadpool(go)
        except DefinitionInvalid as exc:
            return _invalid(exc)

    @routes.post(
        "/definitions",
        status_code=201,
        summary="Validate and publish a definition (200 when already published as is)",
    )
    async def publish(request: Request, principal: Principal = Depends(require(PUBLISH))) -> Any:
        raw = await bodies.read(request, settings)

        def go() -> dict[str, Any]:
            document = _document(raw, settings, principal)
            request = Audited(
                "definition_publish",
                principal.name,
                tenant=document.get("tenant") if isinstance(document.get("tenant"), str) else None,
                details={"definition_id": document.get("id"), "version": document.get("version")},
            )
            with audited(settings, request):
                body = definition_actions.publish(document, settings)
                request.details["outcome"] = body.get("outcome")
            return body

        try:
            body = await run_in_threadpool(go)
        except DefinitionInvalid as exc:
            return _invalid(exc)
        return JSONResponse(body, status_code=201 if body["published"] else 200)

    @routes.get("/definitions", summary="Published definitions, as projected")
    def list_definitions(
        tenant: str | None = None,
        limit: int = Query(queries.DEFAULT_LIMIT, ge=1),
        principal: Principal = Depends(require(READ)),
    ) -> list[dict[str, Any]]:
        with db.reading(settings.database_url()) as conn:
            return queries.list_definitions(
                conn, tenant=tenant_scope(principal, tenant), limit=limit
            )

    return routes
