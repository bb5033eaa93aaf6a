"""The Temporal workflow around the interpreter: it turns signals into interpreter
input and implements the interpreter's Host with activities, timers and wait
conditions. No I/O happens here; it all happens in activities."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from workflows.errors import StepError
    from workflows.interpreter import Interpreter
    from workflows.messages import (
        WORKFLOW_NAME,
        ActionRequest,
        ActionResult,
        CancelRequest,
        DeliveredEvent,
        EmitRequest,
        RunInput,
        RunResult,
    )

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


class TemporalHost:
    def now(self) -> datetime:
        return workflow.now()

    async def emit(self, run_id: str, events: list[dict[str, Any]]) -> None:
        await workflow.execute_activity(
            "emit_runtime_events",
            EmitRequest(run_id=run_id, events=events),
            start_to_close_timeout=EMIT_TIMEOUT,
            retry_policy=EMIT_RETRY,
        )

    async def call_action(self, request: ActionRequest) -> dict[str, Any]:
        try:
            result = await workflow.execute_activity(
                "run_action",
                request,
                result_type=ActionResult,
                start_to_close_timeout=ACTION_TIMEOUT,
                retry_policy=ACTION_RETRY,
            )
        except ActivityError as failure:
            raise _step_error(failure, request.step_path) from None
        return result.model_dump(mode="json")

    async def sleep(self, seconds: float) -> None:
        await workflow.sleep(seconds)

    async def wait_until(self, ready: Callable[[], bool], timeout_s: float | None) -> bool:
        try:
            await workflow.wait_condition(ready, timeout=timeout_s)
        except TimeoutError:
            return False
        return True


def _step_error(failure: ActivityError, step_path: str) -> BaseException:
    """Keep the category and code an activity raised across the Temporal boundary."""
    cause = failure.cause
    if isinstance(cause, CancelledError):
        return asyncio.CancelledError()
    if isinstance(cause, ActivityTimeout):
        return StepError(
            "TimeoutError",
            "ACTIVITY_TIMEOUT",
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
            str(details.get("code") or "ACTION_FAILED"),
            str(details.get("message") or cause.message),
            step_path,
            dict(details.get("details") or {}),
            retryable=bool(details.get("retryable", not cause.non_retryable)),
        )
    return StepError(
        "ActionError", "ACTION_FAILED", str(cause or failure), step_path, retryable=True
    )


@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class InterpreterWorkflow:
    @workflow.init
    def __init__(self, run: RunInput) -> None:
        self.interpreter = Interpreter(run, TemporalHost())

    @workflow.run
    async def run(self, run: RunInput) -> RunResult:
        try:
            result = await self.interpreter.execute()
        except asyncio.CancelledError:
            # Written from a shielded scope so the CANCELED events always land.
            await asyncio.shield(asyncio.ensure_future(self.interpreter.finish_canceled()))
            raise
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
        self.interpreter.deliver(event)

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
            "steps_executed": i.steps_executed,
            "open_waits": sorted(i.open_waits),
            "buffered_events": len(i.buffer),
            "vars": i.data.vars,
        }
