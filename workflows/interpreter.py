"""The interpreter: runs a pinned definition step by step.

It does no I/O itself. Everything that touches the world (emitting runtime events,
running actions and child runs, sleeping, waiting for a signal) goes through a
`Host`, which the Temporal workflow implements with activities, timers and wait
conditions, and unit tests implement in memory. Every decision is a function of
the definition, the input, the signals received and the host's clock, so Temporal
can replay it.

Continue-as-new happens only between two steps. The unwinding records a cursor (the
index at each level of the step tree plus the state of every enclosing container),
and the next execution walks straight back to that point.

The step walk and what a step handler sees are in `run_state`; this module adds the
run's beginning and end, continue-as-new and the signal handlers."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas.runtime import (
    RunCompletedData,
    RunContinuedAsNewData,
    RunLogData,
    RunStartedData,
)
from workflows.codes import DEFINITION_UNREADABLE, RUN_CANCELED
from workflows.definitions.model import Step
from workflows.errors import ReturnFromRun, StepError
from workflows.expressions.errors import EXPR_EVALUATION
from workflows.messages import (
    CancelRequest,
    Carry,
    DeliveredEvent,
    RunInput,
    RunResult,
    TaskCompletion,
    run_workflow_id,
)
from workflows.run_state import ContinueAsNewRequested, Host, RunState
from workflows.semantics import SEMANTICS_VERSION
from workflows.step_types import HANDLERS

_STEPS: TypeAdapter[list[Step]] = TypeAdapter(list[Step])
# Parsed step lists by definition hash, shared by the runs of one worker process: each
# execution of a long run (one per continue-as-new) would otherwise parse the whole
# definition again. The models are never changed once parsed, and a hit is used only
# when its raw steps equal the run's own, so a wrong hash cannot lend another
# definition's steps.
_PARSED: dict[str, tuple[list[Any], list[Step]]] = {}
_PARSED_LIMIT = 32


class Interpreter(RunState):
    def __init__(self, run: RunInput, host: Host) -> None:
        super().__init__(run, host, HANDLERS)
        # Pinned at the run's start; a later change of behaviour may branch on it.
        self.semantics_version = (
            run.carry.semantics_version if run.carry is not None else SEMANTICS_VERSION
        )

    # -- signals -------------------------------------------------------------

    def deliver(self, event: DeliveredEvent) -> bool:
        """Buffer a routed event; False when its id was seen already. The buffer keeps
        the newest ``buffered_events_limit`` events: a run parked on a busy key stays
        small, and what it lets go is logged."""
        self.signals.received += 1
        delivered = self.signals.delivered
        if event.event_id in delivered:
            return False
        delivered[event.event_id] = None
        while len(delivered) > self.run.options.delivered_ids_limit:
            delivered.popitem(last=False)
        buffer = self.signals.buffer
        buffer.append(event)
        excess = len(buffer) - self.run.options.buffered_events_limit
        if excess > 0:
            for old in buffer[:excess]:
                self.drop_buffered(old, "buffer_full")
            del buffer[:excess]
        return True

    def complete_task(self, completion: TaskCompletion) -> None:
        self.signals.received += 1
        self.signals.completions.setdefault(completion.task_id, []).append(completion)

    def note_cancel_request(self, request: CancelRequest) -> None:
        self.signals.received += 1
        self.event(
            RunLogData(
                level="WARNING",
                message=f"cancel requested: {request.reason}",
                details={"action": "cancel", "requested_by": request.requested_by},
            )
        )

    async def execute(self) -> RunResult:
        carry = self.run.carry
        if carry is None:
            self.event(
                RunStartedData(
                    definition_id=self.run.definition_id,
                    version=self.run.version,
                    definition_hash=self.run.definition_hash,
                    input=self.run.input,
                    workflow_id=self.run.workflow_id or run_workflow_id(self.run.run_id),
                    trigger_event_id=self.run.trigger_event_id,
                    parent_run_id=self.run.parent_run_id,
                    root_run_id=self.run.root_run_id or self.run.run_id,
                    parent_step_path=self.run.parent_step_path,
                    semantics_version=self.semantics_version,
                    schedule_id=self.run.schedule_id,
                    scheduled_at=self.run.scheduled_at,
                )
            )
        output: Any = None
        try:
            if carry is None and self.run.input_error is not None:
                failed = self.run.input_error
                raise StepError(
                    "ExpressionError",
                    str(failed.get("code", EXPR_EVALUATION)),
                    str(failed.get("message", "the schedule's input failed")),
                    "root.trigger.input",
                )
            await self.run_steps(
                self._steps(),
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
            self.event(RunCompletedData(status="FAILED", error=failure.as_dict()))
            await self.flush()
            return RunResult(
                run_id=self.run.run_id, status="FAILED", error=failure.as_dict(), last_seq=self.seq
            )
        self.status = "SUCCEEDED"
        self.current_step = None
        self.event(RunCompletedData(status="SUCCEEDED", output=output))
        await self.flush()
        return RunResult(
            run_id=self.run.run_id, status="SUCCEEDED", output=output, last_seq=self.seq
        )

    def _steps(self) -> list[Step]:
        """The definition's steps as typed models (parsed once per worker). Publish
        validated them already, so a refusal here is a corrupt input, not an author's
        mistake."""
        raw = self.run.definition.get("steps", [])
        known = _PARSED.get(self.run.definition_hash)
        if known is not None and known[0] == raw:
            return known[1]
        try:
            steps = _STEPS.validate_python(raw)
        except ValidationError as exc:
            raise StepError(
                "InterpreterCorruption",
                DEFINITION_UNREADABLE,
                f"the pinned definition does not parse: {exc}",
                "root",
            ) from None
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[self.run.definition_hash] = (copy.deepcopy(raw), steps)
        return steps

    async def _continue_as_new(self, cursor: list[dict[str, Any]]) -> RunResult:
        self.log_dropped()
        self.event(RunContinuedAsNewData(next_seq=self.seq + 2, steps_executed=self.steps_total))
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
            completions=self.signals.all_completions(),
            semantics_version=self.semantics_version,
            wait_from=self.wait_from,
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
                "completions": self.signals.all_completions(),
            }
        )

    async def finish_canceled(self) -> RunResult:
        """Called by the workflow after Temporal cancelled it: close the open waits
        and end the run, so the tables show CANCELED."""
        for wait_id in list(self.open_waits):
            self.close_wait(wait_id, "CANCELED")
        error = StepError("Cancellation", RUN_CANCELED, "the run was canceled", self.current_step)
        self.status = "CANCELED"
        self.event(RunCompletedData(status="CANCELED", error=error.as_dict()))
        await self.flush()
        return RunResult(
            run_id=self.run.run_id, status="CANCELED", error=error.as_dict(), last_seq=self.seq
        )
