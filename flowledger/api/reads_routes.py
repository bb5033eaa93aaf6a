"""Waits, tasks (and completing one), the ingress audit, the operator audit and the
dead letters over HTTP, each narrowed to the token's tenants."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from flowledger.api import bodies
from flowledger.api.auth import OPERATE, READ, require, tenant_scope
from flowledger.api.tokens import Principal
from flowledger.errors import InvalidInput, NotFound
from flowledger.operations.task_actions import complete_task
from flowledger.settings import Settings
from processors import redrive
from processors.redrive_rules import Filter, parse_time
from projections import db, queries
from workflows.codes import HUMAN_TASK_NOT_FOUND, HUMAN_TASK_RESPONSE_INVALID

LIMIT = Query(queries.DEFAULT_LIMIT, ge=1)


def _upper(value: str | None, allowed: tuple[str, ...], field: str) -> str | None:
    if value is None:
        return None
    wanted = value.upper()
    if wanted not in allowed:
        raise InvalidInput(
            f"unknown {field} {value!r}", field=field, allowed=list(allowed), status=422
        )
    return wanted


def task_check(principal: Principal) -> Any:
    def check(task: Mapping[str, Any]) -> None:
        if task.get("tenant") not in principal.tenants:
            task_id = task.get("task_id")
            raise NotFound(f"no human task {task_id}", code=HUMAN_TASK_NOT_FOUND, task_id=task_id)

    return check


def complete(
    settings: Settings, principal: Principal, task_id: str, response: Any
) -> dict[str, Any]:
    """The inbox's form and the endpoint alike."""
    return complete_task(
        settings, task_id, lambda: response, principal.name, check=task_check(principal)
    )


def router(settings: Settings) -> APIRouter:
    routes = APIRouter(prefix="/v1")

    @routes.get("/waits", tags=["waits"], summary="Waits of runs, oldest first")
    def waits(
        run_id: str | None = None,
        status: str | None = None,
        tenant: str | None = None,
        limit: int = LIMIT,
        principal: Principal = Depends(require(READ)),
    ) -> list[dict[str, Any]]:
        wanted = _upper(status, queries.WAIT_STATUSES, "status")
        with db.reading(settings.database_url()) as conn:
            return queries.list_waits(
                conn,
                run_id=run_id,
                status=wanted,
                tenant=tenant_scope(principal, tenant),
                limit=limit,
            )

    @routes.get("/tasks", tags=["tasks"], summary="Human tasks, oldest first")
    def tasks(
        status: str | None = None,
        run_id: str | None = None,
        tenant: str | None = None,
        limit: int = LIMIT,
        principal: Principal = Depends(require(READ)),
    ) -> list[dict[str, Any]]:
        wanted = _upper(status, ("OPEN", "COMPLETED"), "status")
        with db.reading(settings.database_url()) as conn:
            return queries.list_tasks(
                conn,
                status=wanted,
                run_id=run_id,
                tenant=tenant_scope(principal, tenant),
                limit=limit,
            )

    @routes.post(
        "/tasks/{task_id}/complete",
        tags=["tasks"],
        summary='Complete a task with {"data": {...}}; 400 with the form schema\'s errors',
    )
    async def complete_one(
        task_id: str, request: Request, principal: Principal = Depends(require(OPERATE))
    ) -> dict[str, Any]:
        body = bodies.json_object(await bodies.read(request, settings), settings)
        if set(body) != {"data"}:
            raise InvalidInput(
                'the body is {"data": <the response>}',
                code=HUMAN_TASK_RESPONSE_INVALID,
                status=422,
                errors=[{"path": "(body)", "message": "expected exactly one field, data"}],
            )
        return await run_in_threadpool(complete, settings, principal, task_id, body["data"])

    @routes.get("/audit", tags=["audit"], summary="The ingress audit, oldest first")
    def audit(
        tenant: str | None = None,
        event_type: str | None = None,
        correlation_key: str | None = None,
        status: str | None = None,
        limit: int = LIMIT,
        principal: Principal = Depends(require(READ)),
    ) -> list[dict[str, Any]]:
        if status is not None and status not in (*queries.AUDIT_STATUSES, "expired"):
            raise InvalidInput(f"unknown audit status {status!r}", field="status", status=422)
        with db.reading(settings.database_url()) as conn:
            return queries.list_audit(
                conn,
                tenant=tenant_scope(principal, tenant),
                event_type=event_type,
                correlation_key=correlation_key,
                status=status,
                limit=limit,
            )

    @routes.get("/audit/operators", tags=["audit"], summary="Run-control requests, oldest first")
    def operators(
        tenant: str | None = None,
        run_id: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        limit: int = LIMIT,
        principal: Principal = Depends(require(READ)),
    ) -> list[dict[str, Any]]:
        with db.reading(settings.database_url()) as conn:
            return queries.list_operator_actions(
                conn,
                tenant=tenant_scope(principal, tenant),
                run_id=run_id,
                action=action,
                outcome=outcome,
                limit=limit,
            )

    @routes.get("/deadletters", tags=["deadletters"], summary="Refused records with why")
    def deadletters(
        tenant: str | None = None,
        reason: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = LIMIT,
        principal: Principal = Depends(require(READ)),
    ) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        chosen = Filter(
            reason,
            parse_time(since, now) if since else None,
            parse_time(until, now) if until else None,
            limit=limit,
            tenants=frozenset(tenant_scope(principal, tenant)),
        )
        return redrive.listing(settings, chosen)

    return routes
