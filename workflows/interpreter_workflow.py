"""The Temporal workflow around the interpreter: it turns signals into interpreter
input and implements the interpreter's Host with activities, timers and wait
conditions. No I/O happens here; it all happens in activities."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TimeoutType,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout

from workflows.codes import ACTION_FAILED, ACTION_KEY_BUSY, ACTIVITY_TIMEOUT, CHILD_FAILED

# Passed through the sandbox: these are deterministic (no I/O at import or in what
# the workflow calls), and re-importing pydantic models per run would cost more than
# the run. The activities are imported for their typed references only.
with workflow.unsafe.imports_passed_through():
    from workflows import scheduled_run, visibility
    from workflows.activities import RuntimeActivities
    from workflows.errors import StepError
    from workflows.interpreter import Interpreter
    from workflows.messages import (
        WORKFLOW_NAME,
        ActionRequest,
        CancelRequest,
        DefinitionReply,
        DefinitionRequest,
        DeliveredEvent,
        EmitRequest,
        RunInput,
        RunResult,
        TaskCompletion,
    )

# Set by Temporal on every run a schedule starts.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
EMIT_TIMEOUT = timedelta(seconds=30)
ACTION_TIMEOUT = timedelta(seconds=60)
# Emission must eventually succeed (Kafka down means wait, not fail the run).
EMIT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)
# Authored retries live in the definition; Temporal runs each attempt once.
ACTION_RETRY = RetryPolicy(maximum_attempts=1)
# Actions heartbeat every few seconds; silence this long means the worker is gone.
ACTION_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
WORKER_LOST_RETRIES = 10
# Waits for a held idempotency key, each until the holder's lease runs out or at
# most KEY_BUSY_POLL_MS, so that a holder's success is seen soon after it lands:
# enough for a holder that runs to the action's full timeout several times over.
KEY_BUSY_RETRIES = 60
KEY_BUSY_POLL_MS = 5_000
KEY_BUSY_MARGIN_MS = 250


def _key_busy_wait_ms(cause: BaseException | None) -> int | None:
    """How long to wait when the activity found the action's key held, else None."""
    if not isinstance(cause, ApplicationError) or not cause.details:
        return None
    details = cause.details[0]
    if not isinstance(details, dict) or details.get("code") != ACTION_KEY_BUSY:
        return None
    wait = (details.get("details") or {}).get("retry_after_ms", 0)
    return int(wait) if isinstance(wait, int | float) and wait >= 0 else 0


class TemporalHost:
    def __init__(self) -> None:
        # The traceparent of the last event delivered to the run: what it emits from
        # then on continues that event's trace (set from signal input: deterministic).
        self.cause: str | None = None

    def now(self) -> datetime:
        return workflow.now()

    def start_time(self) -> datetime:
        # The start request's time (WorkflowExecutionStarted), not the first task's:
        # a run started while no worker polls still takes the events sent meanwhile.
        return workflow.info().workflow_start_time

    async def emit(self, run_id: str, events: list[dict[str, Any]]) -> None:
        await workflow.execute_activity_method(
            RuntimeActivities.emit_runtime_events,
            EmitRequest(run_id=run_id, events=events, traceparent=self.cause),
            start_to_close_timeout=EMIT_TIMEOUT,
            retry_policy=EMIT_RETRY,
        )

    async def call_action(self, request: ActionRequest) -> dict[str, Any]:
        # An attempt whose worker died (its heartbeats stopped) is run again as the
        # same attempt: a lost process is not a failure of the action, and Temporal's
        # own retries stay off so that authored retries alone decide.
        # An attempt that finds its idempotency key held by another one (a concurrent
        # run, or a worker that died holding it) waits for the holder's lease and asks
        # again: the same attempt, never a second concurrent execution.
        lost = busy = 0
        while True:
            try:
                result = await workflow.execute_activity_method(
                    RuntimeActivities.run_action,
                    request,
                    start_to_close_timeout=ACTION_TIMEOUT,
                    heartbeat_timeout=ACTION_HEARTBEAT_TIMEOUT,
                    retry_policy=ACTION_RETRY,
                )
                break
            except ActivityError as failure:
                cause = failure.cause
                worker_lost = (
                    isinstance(cause, ActivityTimeout) and cause.type == TimeoutType.HEARTBEAT
                )
                if worker_lost and lost < WORKER_LOST_RETRIES:
                    lost += 1
                    continue
                wait_ms = _key_busy_wait_ms(cause)
                if wait_ms is not None and busy < KEY_BUSY_RETRIES:
                    busy += 1
                    pause_ms = min(wait_ms + KEY_BUSY_MARGIN_MS, KEY_BUSY_POLL_MS)
                    await workflow.sleep(timedelta(milliseconds=pause_ms))
                    continue
                raise _step_error(failure, request.step_path) from None
        return result.model_dump(mode="json")

    async def load_definition(self, request: DefinitionRequest) -> DefinitionReply:
        try:
            return await workflow.execute_activity_method(
                RuntimeActivities.load_definition,
                request,
                start_to_close_timeout=EMIT_TIMEOUT,
                retry_policy=EMIT_RETRY,
            )
        except ActivityError as failure:
            raise _step_error(failure, "") from None

    async def run_child(self, child: RunInput) -> RunResult:
        try:
            return await workflow.execute_child_workflow(
                InterpreterWorkflow.run,
                child,
                id=child.workflow_id,
                task_queue=workflow.info().task_queue,
                search_attributes=visibility.start_attributes(child),
                static_summary=visibility.static_summary(child),
            )
        except ChildWorkflowError as failure:
            raise _child_error(failure) from None

    def continue_as_new_suggested(self) -> bool:
        return workflow.info().is_continue_as_new_suggested()

    def patched(self, change: str) -> bool:
        return workflow.patched(change)

    def set_correlation_keys(self, keys: list[str]) -> None:
        workflow.upsert_search_attributes([visibility.correlation_keys_update(keys)])

    async def sleep(self, seconds: float) -> None:
        await workflow.sleep(seconds)

    async def wait_until(self, ready: Callable[[], bool], timeout_s: float | None) -> bool:
        try:
            await workflow.wait_condition(ready, timeout=timeout_s)
        except TimeoutError:
            return False
        return True


def _child_error(failure: ChildWorkflowError) -> BaseException:
    cause = failure.cause
    if isinstance(cause, CancelledError):
        # Almost always our own cancellation propagated to the child; either way a
        # cancellation is never something a tryCatch may swallow.
        return asyncio.CancelledError()
    details: dict[str, Any] = {}
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        details = dict(cause.details[0])
    return StepError(
        "ChildWorkflowError",
        str(details.get("code") or CHILD_FAILED),
        str(
            details.get("message")
            or (cause.message if isinstance(cause, ApplicationError) else str(failure))
        ),
        None,
        {"child_error": details} if details else {},
        retryable=True,
    )


def _step_error(failure: ActivityError, step_path: str) -> BaseException:
    """Keep the category and code an activity raised across the Temporal boundary."""
    cause = failure.cause
    if isinstance(cause, CancelledError):
        return asyncio.CancelledError()
    if isinstance(cause, ActivityTimeout):
        return StepError(
            "TimeoutError",
            ACTIVITY_TIMEOUT,
            str(cause) or "activity timed out",
            step_path,
            retryable=True,
        )
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else {}
        if not isinstance(details, dict):
            details = {}
        return StepError(
            cause.type or "ActionError",
            str(details.get("code") or ACTION_FAILED),
            str(details.get("message") or cause.message),
            step_path,
            dict(details.get("details") or {}),
            retryable=bool(details.get("retryable", not cause.non_retryable)),
        )
    return StepError("ActionError", ACTION_FAILED, str(cause or failure), step_path, retryable=True)


def _scheduled_at(run: RunInput) -> datetime:
    """When the schedule meant the run to start: Temporal's TemporalScheduledStartTime
    search attribute, else the time in the workflow id, else the start request's."""
    info = workflow.info()
    found = info.typed_search_attributes.get(SCHEDULED_START_TIME)
    if found is None and run.schedule_id is not None:
        found = scheduled_run.time_from_workflow_id(info.workflow_id, run.schedule_id)
    return found or info.workflow_start_time


@workflow.defn(name=WORKFLOW_NAME)
class InterpreterWorkflow:
    @workflow.init
    def __init__(self, run: RunInput) -> None:
        self.host = TemporalHost()
        if scheduled_run.needs_resolving(run):
            run = scheduled_run.resolve(run, workflow.info().workflow_id, _scheduled_at(run))
        self.interpreter = Interpreter(run, self.host)

    @workflow.run
    async def run(self, run: RunInput) -> RunResult:
        try:
            result = await self.interpreter.execute()
        except asyncio.CancelledError:
            # Written from a shielded scope so the CANCELED events always land.
            await asyncio.shield(asyncio.ensure_future(self.interpreter.finish_canceled()))
            raise
        if result.status == "CONTINUE_AS_NEW" and result.carry is not None:
            # Signals that arrived during this task are in the carry once handlers finish.
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self.interpreter.flush()
            carry = self.interpreter.carry_signals(result.carry)
            # The interpreter's input: a scheduled run's is the resolved one.
            workflow.continue_as_new(self.interpreter.run.model_copy(update={"carry": carry}))
        if result.status == "FAILED":
            error = result.error or {}
            raise ApplicationError(
                str(error.get("message", "run failed")),
                error,
                type=str(error.get("category", "ActionError")),
                non_retryable=True,
            )
        return result

    @workflow.signal
    def deliver_event(self, event: DeliveredEvent) -> None:
        if event.traceparent is not None:
            self.host.cause = event.traceparent
        self.interpreter.deliver(event)

    @workflow.signal
    def complete_human_task(self, completion: TaskCompletion) -> None:
        self.interpreter.complete_task(completion)

    @workflow.signal
    def request_cancel(self, request: CancelRequest) -> None:
        self.interpreter.note_cancel_request(request)

    @workflow.query
    def current_step(self) -> str | None:
        return self.interpreter.current_step

    @workflow.query
    def current_wait(self) -> dict[str, Any] | None:
        waits = self.interpreter.open_waits
        if not waits:
            return None
        wait_id, data = next(iter(waits.items()))
        return {"wait_id": wait_id, **data}

    @workflow.query
    def summary(self) -> dict[str, Any]:
        i = self.interpreter
        return {
            "run_id": i.run.run_id,
            "status": i.status,
            "current_step": i.current_step,
            "seq": i.seq,
            "steps_total": i.steps_total,
            "executions": i.executions,
            "open_waits": sorted(i.open_waits),
            "open_tasks": sorted(i.open_tasks),
            "buffered_events": len(i.signals.buffer),
            "vars": i.data.vars,
        }
