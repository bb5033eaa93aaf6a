"""A run in progress as step handlers see it: its data, its numbered runtime events,
its open waits, the signals received, and `run_steps`, which walks a step list and
hands each step to the handler of its type.

The handlers come in as a table (see `workflows.step_types`) rather than by import,
so that they can depend on this module without it depending on them."""

from __future__ import annotations

import asyncio
import copy
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from schemas.base import Record
from schemas.runtime import (
    EVENT_MODEL_FOR_DATA,
    RunLogData,
    StepCompletedData,
    StepStartedData,
    WaitCreatedData,
    WaitResolution,
    WaitResolvedData,
    runtime_event_id,
)
from workflows.codes import RUNTIME_EVENT_INVALID, STEP_TYPE_UNKNOWN
from workflows.context import RunData
from workflows.definitions.model import Expr
from workflows.errors import ReturnFromRun, StepError
from workflows.expressions import ExpressionError
from workflows.expressions import compile as compile_expression
from workflows.messages import (
    ActionRequest,
    DefinitionReply,
    DefinitionRequest,
    DeliveredEvent,
    RunInput,
    RunResult,
    TaskCompletion,
)

FLUSH_EVERY = 200
# With BATCHED_EMITS_PATCH: events of pure steps (the only ones that do not flush on
# their own) wait for up to this many, which holds a whole default execution (250
# steps, two events each): one emission per execution instead of three, each one a
# round trip through the Temporal server. Their records are the same; only the
# batches they travel in are fewer.
FLUSH_EVERY_BATCHED = 600
BATCHED_EMITS_PATCH = "flowledger.emit.batched-pure-steps"
# The Temporal patch that brought the correlation-key upserts (Host.patched).
CORRELATION_KEYS_PATCH = "flowledger.visibility.correlation-keys"

# Why a buffered event was let go, as the RunLog entry says it.
DROP_REASONS = {
    "before_wait": "received before the point the open wait may take events from",
    "not_taken": "the open wait did not take it, and no later wait may",
    "buffer_full": "the buffer is at its limit (buffered_events_limit)",
}


class Host(Protocol):
    def now(self) -> datetime: ...

    def start_time(self) -> datetime:
        """When the run's start was requested (this execution's, for a continued one)."""
        ...

    async def emit(self, run_id: str, events: list[dict[str, Any]]) -> None: ...

    async def call_action(self, request: ActionRequest) -> dict[str, Any]: ...

    async def load_definition(self, request: DefinitionRequest) -> DefinitionReply: ...

    async def run_child(self, child: RunInput) -> RunResult: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_until(self, ready: Callable[[], bool], timeout_s: float | None) -> bool: ...

    def continue_as_new_suggested(self) -> bool: ...

    def patched(self, change: str) -> bool:
        """Whether this run takes the changed behaviour named `change` (Temporal's
        patching: an execution that already ran the old code keeps it on replay)."""
        ...

    def set_correlation_keys(self, keys: list[str]) -> None:
        """Make `keys` (sorted, maybe empty) the run's FlowledgerCorrelationKeys."""
        ...


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

    @classmethod
    def inside_step(cls, state: dict[str, Any]) -> ContinueAsNewRequested:
        """Raised by a step that is itself in progress (a wait): its list records the
        step's index with ``state`` as the last cursor entry, and the next execution
        hands that state back to the same step instead of starting it again."""
        switch = cls(0)
        switch.cursor = []
        switch.container_state = state
        return switch


# (run, typed step, step path, iteration, loop locals, resume) -> outcome
StepHandler = Callable[
    ["RunState", Any, str, str, dict[str, Any], Resume | None], Awaitable[Outcome]
]


@dataclass
class Signals:
    delivered: OrderedDict[str, None] = field(default_factory=OrderedDict)
    buffer: list[DeliveredEvent] = field(default_factory=list)
    # Buffered events let go (reason, event) and not logged yet; a RunLog entry goes
    # out for them with the next emission, so none disappears silently.
    dropped: list[tuple[str, DeliveredEvent]] = field(default_factory=list)
    # Per task, every completion in the order received: a refused one must not hide a
    # valid one that arrived in the same workflow task.
    completions: dict[str, list[TaskCompletion]] = field(default_factory=dict)

    def all_completions(self) -> list[TaskCompletion]:
        return [c for queued in self.completions.values() for c in queued]

    received: int = 0


def event_invalid(exc: ValidationError, step_path: str | None) -> StepError:
    """A runtime event the workflow built does not fit its schema: a bug, never
    something a tryCatch may swallow."""
    return StepError(
        "InterpreterCorruption",
        RUNTIME_EVENT_INVALID,
        f"{exc.title} does not fit its schema: {exc}",
        step_path,
    )


class RunState:
    def __init__(self, run: RunInput, host: Host, handlers: Mapping[str, StepHandler]) -> None:
        self.run = run
        self.host = host
        self.handlers = handlers
        carry = run.carry
        self.seq = (carry.next_seq - 1) if carry else 0
        self.pending: list[dict[str, Any]] = []
        self._batched: bool | None = None
        # An emission started by flush_beside and not waited for yet.
        self._emitting: asyncio.Future[None] | None = None
        self.data = RunData(
            payload=copy.deepcopy(carry.payload if carry else run.input),
            vars=copy.deepcopy(carry.vars) if carry else {},
        )
        self.signals = Signals()
        if carry:
            self.signals.delivered = OrderedDict((i, None) for i in carry.delivered_ids)
            self.signals.buffer = list(carry.buffered)
            for completion in carry.completions:
                self.signals.completions.setdefault(completion.task_id, []).append(completion)
        self.open_waits: dict[str, dict[str, Any]] = {}
        # What the host was last told the open waits' keys are (None: nothing yet).
        self._published_keys: list[str] | None = None
        self.open_tasks: dict[str, dict[str, Any]] = {}
        self.current_step: str | None = None
        self.status = "RUNNING"
        self.steps_total = carry.steps_executed if carry else 0
        self.steps_this_execution = 0
        self.executions = carry.executions if carry else 1
        # The point the run last reached before a wait (workflows/wait_rule.py); None
        # until asked, then the start request (read from the host inside the workflow).
        self._wait_from: datetime | None = carry.wait_from if carry else None
        self.system = {
            "run_id": run.run_id,
            "tenant": run.tenant,
            "definition_id": run.definition_id,
            "version": run.version,
            "definition_hash": run.definition_hash,
        }

    # -- runtime events ------------------------------------------------------

    def event(self, data: Record) -> None:
        """Number `data` as the run's next runtime event and queue it for emission."""
        self.seq += 1
        envelope = EVENT_MODEL_FOR_DATA[type(data)](
            event_id=runtime_event_id(self.run.run_id, self.seq),
            run_id=self.run.run_id,
            tenant=self.run.tenant,
            seq=self.seq,
            occurred_at=self.host.now(),
            data=data,
        )
        self.pending.append(envelope.model_dump(mode="json"))

    async def flush(self) -> None:
        await self._emitted()
        self.log_dropped()
        if self.pending:
            batch, self.pending = self.pending, []
            await self.host.emit(self.run.run_id, batch)

    async def flush_beside(self) -> None:
        """Start emitting what is pending and return before Kafka has it, so that the
        next effect (an action) runs beside the emission instead of after it: one round
        trip through Temporal instead of two. The next flush waits for this one first,
        so a run's batches still land one after the other, in seq order."""
        await self._emitted()
        self.log_dropped()
        if self.pending:
            batch, self.pending = self.pending, []
            self._emitting = asyncio.ensure_future(self.host.emit(self.run.run_id, batch))

    async def _emitted(self) -> None:
        if self._emitting is not None:
            emitting, self._emitting = self._emitting, None
            await emitting

    def drop_buffered(self, event: DeliveredEvent, reason: str) -> None:
        self.signals.dropped.append((reason, event))

    def log_dropped(self) -> None:
        """One RunLog entry per reason for the buffered events dropped since the last."""
        if not self.signals.dropped:
            return
        dropped, self.signals.dropped = self.signals.dropped, []
        by_reason: dict[str, list[dict[str, Any]]] = {}
        for reason, e in dropped:
            by_reason.setdefault(reason, []).append(
                {
                    "event_id": e.event_id,
                    "event_type": e.event_type,
                    "correlation_key": e.correlation_key,
                    "received_at": e.received_at,
                }
            )
        for reason, events in by_reason.items():
            self.event(
                RunLogData(
                    level="WARNING",
                    message=f"{len(events)} buffered event(s) dropped: {DROP_REASONS[reason]}",
                    details={"action": "drop_buffered", "reason": reason, "events": events},
                )
            )

    # -- waits ---------------------------------------------------------------

    @property
    def wait_from(self) -> datetime:
        if self._wait_from is None:
            self._wait_from = self.host.start_time()
        return self._wait_from

    @property
    def skew(self) -> timedelta:
        return timedelta(seconds=self.run.options.clock_skew_tolerance_s)

    def open_wait(self, data: WaitCreatedData) -> None:
        self.open_waits[data.wait_id] = data.model_dump(
            mode="json", exclude={"wait_id"}, exclude_unset=True
        )
        self.status = "WAITING"
        self.publish_correlation_keys()
        self.event(data)

    def reopen_wait(self, data: WaitCreatedData) -> None:
        """A wait carried across continue-as-new: open again, not created again (its
        WaitCreated is in the log already, and the router still has it)."""
        self.open_waits[data.wait_id] = data.model_dump(
            mode="json", exclude={"wait_id"}, exclude_unset=True
        )
        self.status = "WAITING"
        self.publish_correlation_keys()

    def close_wait(
        self, wait_id: str, resolution: WaitResolution, matched: str | None = None
    ) -> None:
        self.open_waits.pop(wait_id, None)
        if not self.open_waits:
            self.status = "RUNNING"
        self.publish_correlation_keys()
        self._wait_from = self.host.now()
        self.event(
            WaitResolvedData(wait_id=wait_id, resolution=resolution, matched_event_id=matched)
        )

    def publish_correlation_keys(self) -> None:
        """Tell the host the keys of the open event waits when they changed, so that
        Temporal's visibility finds the run waiting on a key. Only where the cluster
        has the attribute, and only in executions that began with this code (the
        upsert is a command that older histories do not have)."""
        if not self.run.options.search_attributes:
            return
        keys = sorted(
            {
                str(w["correlation_key"])
                for w in self.open_waits.values()
                if w.get("wait_type") == "event" and w.get("correlation_key") is not None
            }
        )
        if keys == self._published_keys:
            return
        if self._published_keys is None and not keys:
            # Nothing was ever set: there is nothing to unset either.
            self._published_keys = keys
            return
        if not self.host.patched(CORRELATION_KEYS_PATCH):
            return
        self._published_keys = keys
        self.host.set_correlation_keys(keys)

    # -- expressions ---------------------------------------------------------

    def evaluate(
        self,
        value: Any,
        path: str,
        field_name: str,
        local: dict[str, Any],
        additions: dict[str, Any] | None = None,
    ) -> Any:
        if isinstance(value, Expr):
            return self._expression(value.expr, path, field_name, local, additions)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", by_alias=True, exclude_unset=True)
        if isinstance(value, dict):
            # A literal object may hold expressions of its own, still as raw JSON.
            if set(value) == {"$expr"}:
                return self._expression(value["$expr"], path, field_name, local, additions)
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

    def _expression(
        self,
        text: Any,
        path: str,
        field_name: str,
        local: dict[str, Any],
        additions: dict[str, Any] | None,
    ) -> Any:
        options = self.run.expressions
        try:
            compiled = compile_expression(
                text,
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
                {"field": field_name, "expression": text},
            ) from None

    def assign_map(
        self,
        mapping: Mapping[str, Any],
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

    # -- walking the steps ---------------------------------------------------

    def _switch_due(self) -> bool:
        return (
            self.steps_this_execution >= self.run.options.continue_as_new_steps
            or self.switch_due_while_waiting()
        )

    def switch_due_while_waiting(self) -> bool:
        """A wait switches on signals and on Temporal's word, never on steps: no step
        runs while it waits."""
        return (
            self.signals.received >= self.run.options.continue_as_new_signals
            or self.host.continue_as_new_suggested()
        )

    async def run_steps(
        self,
        steps: list[Any],
        base: str,
        iteration: str,
        local: dict[str, Any],
        cursor: list[dict[str, Any]] | None = None,
    ) -> None:
        start = int(cursor[0]["index"]) if cursor else 0
        for index in range(start, len(steps)):
            resume: Resume | None = None
            # A last entry with a state is a step that switched while in progress.
            if cursor and index == start and (len(cursor) > 1 or cursor[0].get("state")):
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
        step: Any,
        path: str,
        iteration: str,
        local: dict[str, Any],
        resume: Resume | None = None,
    ) -> None:
        kind = str(step.type)
        handler = self.handlers.get(kind)
        self.current_step = path
        common = {"step_path": path, "step_id": step.id, "step_type": kind}
        if resume is None:
            self.steps_total += 1
            self.steps_this_execution += 1
            self.event(StepStartedData(**common, iteration=_iteration_number(iteration)))
        try:
            if handler is None:
                raise StepError(
                    "InterpreterCorruption",
                    STEP_TYPE_UNKNOWN,
                    f"no handler for step type {kind!r}",
                    path,
                )
            try:
                outcome = await handler(self, step, path, iteration, local, resume)
            except ValidationError as exc:
                raise event_invalid(exc, self.current_step) from None
        except StepError as failure:
            if failure.step_path is None:
                failure.step_path = path
            self.event(StepCompletedData(**common, status="FAILED", error=failure.as_dict()))
            raise
        except ReturnFromRun:
            self.event(StepCompletedData(**common, status="SUCCEEDED"))
            raise
        self.event(
            StepCompletedData(
                **common,
                status=outcome.status,
                output=outcome.output,
                error=outcome.error.as_dict() if outcome.error else None,
            )
        )
        if len(self.pending) >= FLUSH_EVERY and (
            len(self.pending) >= FLUSH_EVERY_BATCHED or not self._batched_emits()
        ):
            await self.flush()

    def _batched_emits(self) -> bool:
        """Whether this execution batches pure steps' events by FLUSH_EVERY_BATCHED
        (asked once it first matters: a history recorded before the patch has an
        emission there, and replays it)."""
        if self._batched is None:
            self._batched = self.host.patched(BATCHED_EMITS_PATCH)
        return self._batched


def _iteration_number(iteration: str) -> int | None:
    return int(iteration.rsplit(".", 1)[-1]) if iteration else None
