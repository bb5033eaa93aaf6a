"""The interpreter: runs a pinned definition step by step.

It does no I/O itself. Everything that touches the world (emitting runtime events,
running actions and child runs, sleeping, waiting for a signal) goes through a
`Host`, which the Temporal workflow implements with activities, timers and wait
conditions, and unit tests implement in memory. Every decision is a function of
the definition, the input, the signals received and the host's clock, so Temporal
can replay it.

Continue-as-new happens only between two steps. The unwinding records a cursor (the
index at each level of the step tree plus the state of every enclosing container),
and the next execution walks straight back to that point."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from schemas.runtime import RUNTIME_EVENT_ADAPTER, runtime_event_id
from workflows.context import RunData
from workflows.errors import ReturnFromRun, StepError
from workflows.expressions import ExpressionError
from workflows.expressions import compile as compile_expression
from workflows.messages import (
    ActionRequest,
    CancelRequest,
    Carry,
    DefinitionReply,
    DefinitionRequest,
    DeliveredEvent,
    RunInput,
    RunResult,
    TaskCompletion,
)

FLUSH_EVERY = 200


class Host(Protocol):
    def now(self) -> datetime: ...

    async def emit(self, run_id: str, events: list[dict[str, Any]]) -> None: ...

    async def call_action(self, request: ActionRequest) -> dict[str, Any]: ...

    async def load_definition(self, request: DefinitionRequest) -> DefinitionReply: ...

    async def run_child(self, child: RunInput) -> RunResult: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_until(self, ready: Callable[[], bool], timeout_s: float | None) -> bool: ...

    def continue_as_new_suggested(self) -> bool: ...


@dataclass
class Outcome:
    status: str = "SUCCEEDED"
    output: Any = None
    error: StepError | None = None


@dataclass
class Resume:
    """Where a container step picks up after continue-as-new: its own saved state and
    the cursor of the step list inside it."""

    state: dict[str, Any]
    inner: list[dict[str, Any]]


class ContinueAsNewRequested(Exception):
    def __init__(self, index: int) -> None:
        super().__init__("continue-as-new")
        self.cursor: list[dict[str, Any]] = [{"index": index}]
        # Set by the container step that is unwinding, consumed by its step list.
        self.container_state: dict[str, Any] | None = None


StepHandler = Callable[
    ["Interpreter", dict[str, Any], str, str, dict[str, Any], Resume | None],
    Awaitable[Outcome],
]


@dataclass
class Signals:
    delivered: OrderedDict[str, None] = field(default_factory=OrderedDict)
    buffer: list[DeliveredEvent] = field(default_factory=list)
    completions: dict[str, TaskCompletion] = field(default_factory=dict)
    received: int = 0


class Interpreter:
    def __init__(self, run: RunInput, host: Host) -> None:
        self.run = run
        self.host = host
        carry = run.carry
        self.seq = (carry.next_seq - 1) if carry else 0
        self.pending: list[dict[str, Any]] = []
        self.data = RunData(
            payload=copy.deepcopy(carry.payload if carry else run.input),
            vars=copy.deepcopy(carry.vars) if carry else {},
        )
        self.signals = Signals()
        if carry:
            self.signals.delivered = OrderedDict((i, None) for i in carry.delivered_ids)
            self.signals.buffer = list(carry.buffered)
            self.signals.completions = {c.task_id: c for c in carry.completions}
        self.open_waits: dict[str, dict[str, Any]] = {}
        self.open_tasks: dict[str, dict[str, Any]] = {}
        self.current_step: str | None = None
        self.status = "RUNNING"
        self.steps_total = carry.steps_executed if carry else 0
        self.steps_this_execution = 0
        self.executions = carry.executions if carry else 1
        self.system = {
            "run_id": run.run_id,
            "tenant": run.tenant,
            "definition_id": run.definition_id,
            "version": run.version,
            "definition_hash": run.definition_hash,
        }

    # -- signals -------------------------------------------------------------

    def deliver(self, event: DeliveredEvent) -> bool:
        """Buffer a routed event; False when its id was seen already."""
        self.signals.received += 1
        delivered = self.signals.delivered
        if event.event_id in delivered:
            return False
        delivered[event.event_id] = None
        while len(delivered) > self.run.options.delivered_ids_limit:
            delivered.popitem(last=False)
        self.signals.buffer.append(event)
        return True

    def complete_task(self, completion: TaskCompletion) -> None:
        self.signals.received += 1
        self.signals.completions.setdefault(completion.task_id, completion)

    def note_cancel_request(self, request: CancelRequest) -> None:
        self.signals.received += 1
        self.event(
            "RunLog",
            {
                "level": "WARNING",
                "message": f"cancel requested: {request.reason}",
                "details": {"action": "cancel", "requested_by": request.requested_by},
            },
        )

    # -- runtime events ------------------------------------------------------

    def event(self, type_: str, data: dict[str, Any]) -> None:
        self.seq += 1
        raw = {
            "event_id": str(runtime_event_id(self.run.run_id, self.seq)),
            "run_id": self.run.run_id,
            "tenant": self.run.tenant,
            "seq": self.seq,
            "occurred_at": self.host.now().isoformat(),
            "type": type_,
            "data": data,
        }
        try:
            checked = RUNTIME_EVENT_ADAPTER.validate_python(raw)
        except ValueError as exc:
            raise StepError(
                "InterpreterCorruption",
                "RUNTIME_EVENT_INVALID",
                f"{type_} event does not fit its schema: {exc}",
                self.current_step,
            ) from None
        self.pending.append(RUNTIME_EVENT_ADAPTER.dump_python(checked, mode="json"))

    async def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            await self.host.emit(self.run.run_id, batch)

    # -- waits ---------------------------------------------------------------

    def open_wait(self, wait_id: str, data: dict[str, Any]) -> None:
        self.open_waits[wait_id] = data
        self.status = "WAITING"
        self.event("WaitCreated", {"wait_id": wait_id, **data})

    def close_wait(self, wait_id: str, resolution: str, matched: str | None = None) -> None:
        self.open_waits.pop(wait_id, None)
        if not self.open_waits:
            self.status = "RUNNING"
        self.event(
            "WaitResolved",
            {"wait_id": wait_id, "resolution": resolution, "matched_event_id": matched},
        )

    # -- expressions ---------------------------------------------------------

    def evaluate(
        self,
        value: Any,
        path: str,
        field_name: str,
        local: dict[str, Any],
        additions: dict[str, Any] | None = None,
    ) -> Any:
        if isinstance(value, dict):
            if set(value) == {"$expr"}:
                options = self.run.expressions
                try:
                    compiled = compile_expression(
                        value["$expr"],
                        extra_functions=options.extra_functions,
                        step_budget=options.step_budget,
                        max_output_chars=options.max_output_chars,
                    )
                    return compiled.evaluate(
                        self.data.context(self.system, local, additions), self.host.now()
                    )
                except ExpressionError as exc:
                    raise StepError(
                        "ExpressionError",
                        exc.code,
                        exc.message,
                        path,
                        {"field": field_name, "expression": value["$expr"]},
                    ) from None
            return {
                k: self.evaluate(v, path, f"{field_name}.{k}", local, additions)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [
                self.evaluate(v, path, f"{field_name}[{i}]", local, additions)
                for i, v in enumerate(value)
            ]
        return copy.deepcopy(value)

    def assign_map(
        self,
        mapping: dict[str, Any],
        path: str,
        local: dict[str, Any],
        additions: dict[str, Any] | None = None,
    ) -> None:
        # Every right-hand side first, so targets cannot see each other's new values.
        values = {
            t: self.evaluate(e, path, f"assign.{t}", local, additions) for t, e in mapping.items()
        }
        for target, value in values.items():
            self.data.assign(target, value, local, path)

    # -- running -------------------------------------------------------------

    async def execute(self) -> RunResult:
        carry = self.run.carry
        if carry is None:
            self.event(
                "RunStarted",
                {
                    "definition_id": self.run.definition_id,
                    "version": self.run.version,
                    "definition_hash": self.run.definition_hash,
                    "input": self.run.input,
                    "workflow_id": self.run.workflow_id or f"flowledger:run:{self.run.run_id}",
                    "trigger_event_id": self.run.trigger_event_id,
                    "parent_run_id": self.run.parent_run_id,
                    "root_run_id": self.run.root_run_id or self.run.run_id,
                    "parent_step_path": self.run.parent_step_path,
                },
            )
        output: Any = None
        try:
            await self.run_steps(
                self.run.definition.get("steps", []),
                "root",
                "",
                {},
                carry.cursor if carry and carry.cursor else None,
            )
        except ReturnFromRun as done:
            output = done.output
        except ContinueAsNewRequested as switch:
            return await self._continue_as_new(switch.cursor)
        except StepError as failure:
            self.status = "FAILED"
            self.current_step = None
            self.event("RunCompleted", {"status": "FAILED", "error": failure.as_dict()})
            await self.flush()
            return RunResult(
                run_id=self.run.run_id, status="FAILED", error=failure.as_dict(), last_seq=self.seq
            )
        self.status = "SUCCEEDED"
        self.current_step = None
        self.event("RunCompleted", {"status": "SUCCEEDED", "output": output})
        await self.flush()
        return RunResult(
            run_id=self.run.run_id, status="SUCCEEDED", output=output, last_seq=self.seq
        )

    async def _continue_as_new(self, cursor: list[dict[str, Any]]) -> RunResult:
        self.event(
            "RunContinuedAsNew", {"next_seq": self.seq + 2, "steps_executed": self.steps_total}
        )
        await self.flush()
        carry = Carry(
            next_seq=self.seq + 1,
            payload=self.data.payload,
            vars=self.data.vars,
            cursor=cursor,
            steps_executed=self.steps_total,
            executions=self.executions + 1,
            delivered_ids=list(self.signals.delivered),
            buffered=list(self.signals.buffer),
            completions=list(self.signals.completions.values()),
        )
        return RunResult(
            run_id=self.run.run_id, status="CONTINUE_AS_NEW", last_seq=self.seq, carry=carry
        )

    def carry_signals(self, carry: Carry) -> Carry:
        """The carry with the signal state as it is now (handlers may have run since
        the carry was built)."""
        return carry.model_copy(
            update={
                "next_seq": self.seq + 1,
                "delivered_ids": list(self.signals.delivered),
                "buffered": list(self.signals.buffer),
                "completions": list(self.signals.completions.values()),
            }
        )

    async def finish_canceled(self) -> RunResult:
        """Called by the workflow after Temporal cancelled it: close the open waits
        and end the run, so the tables show CANCELED."""
        for wait_id in list(self.open_waits):
            self.close_wait(wait_id, "CANCELED")
        error = StepError("Cancellation", "RUN_CANCELED", "the run was canceled", self.current_step)
        self.status = "CANCELED"
        self.event("RunCompleted", {"status": "CANCELED", "error": error.as_dict()})
        await self.flush()
        return RunResult(
            run_id=self.run.run_id, status="CANCELED", error=error.as_dict(), last_seq=self.seq
        )

    def _switch_due(self) -> bool:
        options = self.run.options
        return (
            self.steps_this_execution >= options.continue_as_new_steps
            or self.signals.received >= options.continue_as_new_signals
            or self.host.continue_as_new_suggested()
        )

    async def run_steps(
        self,
        steps: list[dict[str, Any]],
        base: str,
        iteration: str,
        local: dict[str, Any],
        cursor: list[dict[str, Any]] | None = None,
    ) -> None:
        start = int(cursor[0]["index"]) if cursor else 0
        for index in range(start, len(steps)):
            resume: Resume | None = None
            if cursor and index == start and len(cursor) > 1:
                resume = Resume(state=dict(cursor[0].get("state") or {}), inner=cursor[1:])
            elif self._switch_due() and not (cursor and index == start):
                raise ContinueAsNewRequested(index)
            try:
                await self.run_step(
                    steps[index], f"{base}.steps[{index}]", iteration, local, resume
                )
            except ContinueAsNewRequested as switch:
                state, switch.container_state = switch.container_state, None
                switch.cursor.insert(0, {"index": index, "state": state or {}})
                raise

    async def run_step(
        self,
        step: dict[str, Any],
        path: str,
        iteration: str,
        local: dict[str, Any],
        resume: Resume | None = None,
    ) -> None:
        from workflows.steps import HANDLERS

        kind = str(step.get("type"))
        handler = HANDLERS.get(kind)
        self.current_step = path
        common = {"step_path": path, "step_id": step.get("id"), "step_type": kind}
        if resume is None:
            self.steps_total += 1
            self.steps_this_execution += 1
            self.event("StepStarted", {**common, "iteration": _iteration_number(iteration)})
        try:
            if handler is None:
                raise StepError(
                    "InterpreterCorruption",
                    "STEP_TYPE_UNKNOWN",
                    f"no handler for step type {kind!r}",
                    path,
                )
            outcome = await handler(self, step, path, iteration, local, resume)
        except StepError as failure:
            if failure.step_path is None:
                failure.step_path = path
            self.event("StepCompleted", {**common, "status": "FAILED", "error": failure.as_dict()})
            raise
        except ReturnFromRun:
            self.event("StepCompleted", {**common, "status": "SUCCEEDED"})
            raise
        self.event(
            "StepCompleted",
            {
                **common,
                "status": outcome.status,
                "output": outcome.output,
                "error": outcome.error.as_dict() if outcome.error else None,
            },
        )
        if len(self.pending) >= FLUSH_EVERY:
            await self.flush()


def _iteration_number(iteration: str) -> int | None:
    return int(iteration.rsplit(".", 1)[-1]) if iteration else None
