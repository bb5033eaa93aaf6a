"""Run control as one function per request, audited: start, and cancel, terminate,
rerun, resume, retry, requeue of a run. Temporal decides; the projections only say
where a run is (its workflow id, its tenant)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client

from flowledger.errors import AuthenticationFailed, InvalidInput, ServiceUnavailable
from flowledger.operations.audit_trail import Request, audited
from flowledger.settings import Settings
from projections import lookups
from workflows import control
from workflows.client import connect
from workflows.codes import TEMPORAL_UNAVAILABLE

ACTIONS = ("cancel", "terminate", "rerun", *control.UNSUPPORTED_HINTS)


def start_run(
    settings: Settings,
    *,
    tenant: str,
    definition_id: str,
    data: Any,
    version: int | None,
    requested_by: str,
    passthrough: tuple[type[BaseException], ...] = (),
) -> dict[str, Any]:
    """Start a run of a published definition; the answer of `runs start --json`."""
    request = Request(
        "start",
        requested_by,
        tenant=tenant,
        details={"definition_id": definition_id, "version": version},
    )
    with audited(settings, request, passthrough=passthrough):
        if not isinstance(data, dict):
            raise InvalidInput("the run input must be a JSON object", field="input")
        record = control.find_definition(settings, tenant, definition_id, version)

        async def go() -> control.StartedRun:
            client = await connect(settings)
            return await control.start(settings, client, record, data)

        started = asyncio.run(go())
        request.run_id = started.run_id
        request.details["version"] = started.version
    return started.as_dict()


async def _maybe_client(settings: Settings) -> Client | None:
    try:
        return await asyncio.wait_for(connect(settings), timeout=10)
    except AuthenticationFailed:
        raise  # our credentials, not Temporal's answer to the request: nothing recorded
    except (ServiceUnavailable, TimeoutError):
        return None


Call = Callable[[Settings, Client | None, str, str, str, str], Awaitable[dict[str, Any]]]


async def _cancel(
    settings: Settings, client: Client | None, run_id: str, reason: str, by: str, wid: str
) -> dict[str, Any]:
    return await control.cancel(settings, client, run_id, reason, by, workflow_id=wid)


async def _terminate(
    settings: Settings, client: Client | None, run_id: str, reason: str, by: str, wid: str
) -> dict[str, Any]:
    return await control.terminate(settings, client, run_id, reason, by, workflow_id=wid)


async def _rerun(
    settings: Settings, client: Client | None, run_id: str, reason: str, by: str, wid: str
) -> dict[str, Any]:
    if client is None:
        raise ServiceUnavailable(
            f"Temporal at {settings.temporal.address} is unreachable", code=TEMPORAL_UNAVAILABLE
        )
    return await control.rerun(settings, client, run_id, reason, workflow_id=wid)


def _refusal(action: str) -> Call:
    async def call(
        settings: Settings, client: Client | None, run_id: str, reason: str, by: str, wid: str
    ) -> dict[str, Any]:
        return await control.unsupported(settings, client, action, run_id, reason, workflow_id=wid)

    return call


CALLS: dict[str, Call] = {
    "cancel": _cancel,
    "terminate": _terminate,
    "rerun": _rerun,
    **{action: _refusal(action) for action in control.UNSUPPORTED_HINTS},
}


def control_run(
    settings: Settings,
    action: str,
    run_id: str,
    *,
    reason: str,
    requested_by: str,
    passthrough: tuple[type[BaseException], ...] = (),
) -> dict[str, Any]:
    """One run-control request: the answer of `runs <action> --json`, or its refusal
    (a RunControlError with the 404/409 status) raised after it was recorded."""
    call = CALLS[action]
    request = Request(action, requested_by, reason=reason, run_id=run_id)

    async def go() -> dict[str, Any]:
        workflow_id = lookups.workflow_id_of(settings.database_url(), run_id)
        return await call(
            settings, await _maybe_client(settings), run_id, reason, requested_by, workflow_id
        )

    with audited(settings, request, passthrough=passthrough):
        document = asyncio.run(go())
        if action == "rerun":
            request.details["new_run_id"] = document.get("run_id")
    return document
