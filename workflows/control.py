"""Run control: start, cancel, terminate and rerun go to Temporal, the only execution
authority; resume, retry and requeue exist only to refuse, since Temporal owns those
decisions."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import jsonschema
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from flowledger.errors import FlowledgerError, InvalidInput
from flowledger.settings import Settings
from schemas.definition_record import DefinitionRecord
from workflows import scheduled_run, visibility
from workflows.codes import (
    DEFINITION_NOT_FOUND,
    INVALID_REQUEST,
    RUN_CONTROL_FAILED,
    RUN_INPUT_INVALID,
    RUN_INPUT_TOO_LARGE,
    RUN_NOT_FOUND,
    WORKFLOW_TEMPORAL_ACTION_UNSUPPORTED,
    WORKFLOW_TEMPORAL_CANCEL_FAILED,
    WORKFLOW_TEMPORAL_TERMINATE_FAILED,
)
from workflows.interpreter_workflow import InterpreterWorkflow
from workflows.messages import (
    CancelRequest,
    ExpressionOptions,
    RunInput,
    RunOptions,
    run_workflow_id,
)

ENGINE = "temporal"
# Temporal refuses payloads over 2 MiB; refuse earlier with a clear error.
MAX_INPUT_BYTES = 2 * 1024 * 1024 - 64 * 1024
UNSUPPORTED_HINTS = {
    "resume": "a waiting run resumes when its event, timer or task arrives; publish the event",
    "retry": "Temporal retries failed activities itself; use `runs rerun` for a new run",
    "requeue": "Temporal schedules runs itself; use `runs rerun` for a new run",
}


class RunControlError(FlowledgerError):
    code = RUN_CONTROL_FAILED

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int,
        action: str,
        run_id: str | None,
        hint: str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(
            message,
            code=code,
            status=status,
            action=action,
            engine=ENGINE,
            run_id=run_id,
            hint=hint,
            **context,
        )
        self.status = status


@dataclass(frozen=True)
class StartedRun:
    run_id: str
    workflow_id: str
    definition_id: str
    version: int
    definition_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow_id": self.workflow_id,
            "definition_id": self.definition_id,
            "version": self.version,
            "definition_hash": self.definition_hash,
        }


def run_options(settings: Settings) -> RunOptions:
    w = settings.workflows
    return RunOptions(
        continue_as_new_steps=w.continue_as_new_steps,
        continue_as_new_signals=w.continue_as_new_signals,
        delivered_ids_limit=w.delivered_ids_limit,
        buffered_events_limit=w.buffered_events_limit,
        clock_skew_tolerance_s=settings.processor.clock_skew_tolerance_s,
        search_attributes=settings.temporal.search_attributes,
    )


def expression_options(settings: Settings) -> ExpressionOptions:
    e = settings.expressions
    return ExpressionOptions(
        extra_functions=tuple(e.extra_functions),
        step_budget=e.step_budget,
        max_output_chars=e.max_output_chars,
    )


def check_input(record: DefinitionRecord, data: dict[str, Any]) -> None:
    size = len(json.dumps(data, separators=(",", ":")).encode("utf-8"))
    if size > MAX_INPUT_BYTES:
        raise InvalidInput(
            f"run input is {size} bytes; the limit is {MAX_INPUT_BYTES}",
            code=RUN_INPUT_TOO_LARGE,
            status=400,
            size=size,
        )
    schema = record.definition.get("payload_schema")
    if not schema:
        return
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    if errors:
        problems = [
            {"path": "/".join(str(p) for p in e.path) or "(input)", "message": e.message}
            for e in errors
        ]
        raise InvalidInput(
            f"run input does not match the payload schema: {problems[0]}",
            code=RUN_INPUT_INVALID,
            status=400,
            problems=problems,
        )


def run_input_for(
    settings: Settings,
    record: DefinitionRecord,
    data: dict[str, Any],
    *,
    run_id: str,
    workflow_id: str | None = None,
    trigger_event_id: str | None = None,
) -> RunInput:
    return RunInput(
        run_id=run_id,
        workflow_id=workflow_id or run_workflow_id(run_id),
        tenant=record.tenant,
        definition_id=record.definition_id,
        version=record.version,
        definition_hash=record.hash,
        definition=record.definition,
        input=data,
        trigger_event_id=trigger_event_id,
        expressions=expression_options(settings),
        options=run_options(settings),
    )


def find_definition(
    settings: Settings, tenant: str, definition_id: str, version: int | None
) -> DefinitionRecord:
    from workflows.definitions import store

    record = (
        store.get(settings, tenant, definition_id, version)
        if version is not None
        else store.latest(settings, tenant, definition_id)
    )
    if record is None:
        what = f"{definition_id} v{version}" if version is not None else definition_id
        raise InvalidInput(
            f"no published definition {what} for tenant {tenant}",
            code=DEFINITION_NOT_FOUND,
            status=404,
            definition_id=definition_id,
            tenant=tenant,
            version=version,
        )
    return record


async def start(
    settings: Settings,
    client: Client,
    record: DefinitionRecord,
    data: dict[str, Any],
    *,
    run_id: str | None = None,
    workflow_id: str | None = None,
    trigger_event_id: str | None = None,
) -> StartedRun:
    check_input(record, data)
    rid = run_id or str(uuid.uuid4())
    wid = workflow_id or run_workflow_id(rid)
    run = run_input_for(
        settings, record, data, run_id=rid, workflow_id=wid, trigger_event_id=trigger_event_id
    )
    await client.start_workflow(
        InterpreterWorkflow.run,
        run,
        id=wid,
        task_queue=settings.temporal.task_queue,
        search_attributes=visibility.start_attributes(run),
        static_summary=visibility.static_summary(run),
        # A workflow id names one run for good: a triggered run's id comes from its
        # event, and the same event processed again after the run closed must not
        # start a second one (Temporal's default would allow it).
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    return StartedRun(rid, wid, record.definition_id, record.version, record.hash)


def _check_reason(action: str, run_id: str, reason: str | None) -> None:
    if reason is None or len(reason.strip()) < 3:
        raise RunControlError(
            "a reason of at least 3 characters is required",
            code=INVALID_REQUEST,
            status=400,
            action=action,
            run_id=run_id,
        )


async def _describe(
    client: Client, action: str, run_id: str, workflow_id: str | None = None
) -> Any:
    handle = client.get_workflow_handle(workflow_id or run_workflow_id(run_id))
    try:
        return handle, await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunControlError(
                f"no run {run_id}", code=RUN_NOT_FOUND, status=404, action=action, run_id=run_id
            ) from None
        raise


def _refusal(action: str, code: str, run_id: str) -> Callable[[str], RunControlError]:
    def refused(why: str) -> RunControlError:
        return RunControlError(
            f"Temporal did not accept the {action}: {why}",
            code=code,
            status=409,
            action=action,
            run_id=run_id,
            hint="check that Temporal is reachable and the run is still open; nothing changed",
        )

    return refused


async def _open_run(
    settings: Settings,
    client: Client | None,
    action: str,
    run_id: str,
    workflow_id: str | None,
    refused: Callable[[str], RunControlError],
) -> Any:
    """The handle of a run that is still open, or the action's refusal: Temporal
    unreachable, the run unknown (404) or already closed."""
    if client is None:
        raise refused(f"Temporal at {settings.temporal.address} is unreachable")
    try:
        handle, info = await _describe(client, action, run_id, workflow_id)
    except RunControlError:
        raise
    except Exception as exc:  # unreachable, refused: either way nothing changed
        raise refused(str(exc)) from exc
    if info.status != WorkflowExecutionStatus.RUNNING:
        raise refused(f"the run is already {info.status.name if info.status else 'closed'}")
    return handle


async def cancel(
    settings: Settings,
    client: Client | None,
    run_id: str,
    reason: str,
    requested_by: str | None = None,
    *,
    workflow_id: str | None = None,
) -> dict[str, Any]:
    """Temporal first: the request reaches the workflow, or nothing changes. A run
    started by an event has a trigger workflow id, which the caller looks up (the run
    projection knows it); otherwise the run's own id is used."""
    _check_reason("cancel", run_id, reason)

    refused = _refusal("cancel", WORKFLOW_TEMPORAL_CANCEL_FAILED, run_id)
    handle = await _open_run(settings, client, "cancel", run_id, workflow_id, refused)
    try:
        await handle.signal(
            InterpreterWorkflow.request_cancel,
            CancelRequest(reason=reason, requested_by=requested_by),
        )
        await handle.cancel()
    except Exception as exc:  # unreachable, refused: either way nothing changed
        raise refused(str(exc)) from exc
    return {
        "ok": True,
        "action": "cancel",
        "engine": ENGINE,
        "run_id": run_id,
        "reason": reason,
        "note": "the run turns CANCELED once its workflow has stopped",
    }


async def terminate(
    settings: Settings,
    client: Client | None,
    run_id: str,
    reason: str,
    requested_by: str | None = None,
    *,
    workflow_id: str | None = None,
) -> dict[str, Any]:
    """Temporal first, as for cancel; but no workflow code runs: Temporal closes the
    execution, and the reconciler publishes that verdict (RunReconciled), which turns
    the run TERMINATED in the tables."""
    _check_reason("terminate", run_id, reason)

    refused = _refusal("terminate", WORKFLOW_TEMPORAL_TERMINATE_FAILED, run_id)
    handle = await _open_run(settings, client, "terminate", run_id, workflow_id, refused)
    try:
        text = reason if requested_by is None else f"{reason} (by {requested_by})"
        await handle.terminate(reason=text)
    except Exception as exc:  # unreachable, refused: either way nothing changed
        raise refused(str(exc)) from exc
    return {
        "ok": True,
        "action": "terminate",
        "engine": ENGINE,
        "run_id": run_id,
        "reason": reason,
        "note": "the run turns TERMINATED once the reconciler has recorded Temporal's verdict",
    }


async def unsupported(
    settings: Settings,
    client: Client | None,
    action: str,
    run_id: str,
    reason: str,
    *,
    workflow_id: str | None = None,
) -> dict[str, Any]:
    _check_reason(action, run_id, reason)
    if client is not None:
        # Unreachable or not: the answer is the same refusal, but a 404 wins.
        with contextlib.suppress(RPCError):
            await _describe(client, action, run_id, workflow_id)
    raise RunControlError(
        f"{action} is not something flowledger does: Temporal is the execution authority",
        code=WORKFLOW_TEMPORAL_ACTION_UNSUPPORTED,
        status=409,
        action=action,
        run_id=run_id,
        hint=UNSUPPORTED_HINTS[action],
    )


async def original_input(client: Client, run_id: str, workflow_id: str | None = None) -> RunInput:
    handle = client.get_workflow_handle(workflow_id or run_workflow_id(run_id))
    try:
        history = await handle.fetch_history()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunControlError(
                f"no run {run_id}", code=RUN_NOT_FOUND, status=404, action="rerun", run_id=run_id
            ) from None
        raise
    started = history.events[0].workflow_execution_started_event_attributes
    values = await client.data_converter.decode(started.input.payloads, [RunInput])
    value = values[0]
    assert isinstance(value, RunInput)
    if scheduled_run.needs_resolving(value):
        # A scheduled run's start input is the schedule's; the run made it concrete.
        at = scheduled_run.time_from_workflow_id(handle.id, value.schedule_id or "")
        value = scheduled_run.resolve(
            value, handle.id, at or history.events[0].event_time.ToDatetime(UTC)
        )
    return value


async def rerun(
    settings: Settings, client: Client, run_id: str, reason: str, *, workflow_id: str | None = None
) -> dict[str, Any]:
    _check_reason("rerun", run_id, reason)
    original = await original_input(client, run_id, workflow_id)
    new_id = str(uuid.uuid4())
    fresh = original.model_copy(
        update={
            "run_id": new_id,
            "workflow_id": run_workflow_id(new_id),
            "carry": None,
            "trigger_event_id": None,
            # A rerun is started by hand, not by the schedule.
            "schedule_id": None,
            "scheduled_at": None,
            # The cluster it runs on now decides, not the one the original started on.
            "options": original.options.model_copy(
                update={"search_attributes": settings.temporal.search_attributes}
            ),
        }
    )
    await client.start_workflow(
        InterpreterWorkflow.run,
        fresh,
        id=run_workflow_id(new_id),
        task_queue=settings.temporal.task_queue,
        search_attributes=visibility.start_attributes(fresh),
        static_summary=visibility.static_summary(fresh),
    )
    return {
        "ok": True,
        "action": "rerun",
        "engine": ENGINE,
        "run_id": new_id,
        "rerun_of": run_id,
        "definition_id": original.definition_id,
        "version": original.version,
        "reason": reason,
    }
