"""The pure fold of runtime events: (event, coordinates, run state) -> (run state, row
changes). No I/O; the applier loads the state of the runs a batch touches and writes the
changes.

Idempotency rests on the per-run ``seq``: an event whose seq is not above the run's last
applied seq (a redelivery, an activity retry, a replayed partition) changes nothing.

The two events the reconciler writes (Temporal's verdict, not workflow code's) have
their own rules, both deterministic in partition order: ``RunReconciled`` applies once,
to a run not yet closed, whatever its seq; ``RunReset`` applies unless the run was
already rebuilt from the same execution through the same seq or further, and replaces
the run's rows by the fold of the events it carries (Temporal's history of the new
execution), so that live events of that execution after it are accepted by seq."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from pydantic import ValidationError

from projections.changes import Change, Coordinates, DeleteRun, Upsert
from schemas.runtime import (
    RUNTIME_EVENT_ADAPTER,
    TERMINAL_STATUSES,
    ActionInvocation,
    HumanTaskCompleted,
    HumanTaskCreated,
    RunCompleted,
    RunContinuedAsNew,
    RunError,
    RunLog,
    RunReconciled,
    RunReset,
    RunStarted,
    RuntimeEvent,
    StepCompleted,
    StepStarted,
    WaitCreated,
    WaitResolved,
)

TERMINAL = TERMINAL_STATUSES
RUNS = "workflow_runs"
STEPS = "workflow_run_steps"
WAITS = "workflow_run_waits"
TASKS = "workflow_human_tasks"
LOGS = "workflow_run_logs"
ACTIONS = "workflow_action_invocations"
# The tables holding a run's rows besides workflow_runs: what a reset rebuilds.
RUN_CHILD_TABLES = (STEPS, WAITS, TASKS, LOGS, ACTIONS)


_ZERO = timedelta(0)


def utc(value: datetime | None) -> datetime | None:
    # Almost every timestamp arrives in UTC already; converting it anyway cost more
    # than the rest of a step's fold.
    if value is None or value.utcoffset() == _ZERO:
        return value
    return value.astimezone(UTC)


@dataclass(frozen=True)
class RunRow:
    """One workflow_runs row (its columns minus the provenance ones)."""

    run_id: str
    tenant: str
    status: str = "RUNNING"
    definition_id: str | None = None
    version: int | None = None
    definition_hash: str | None = None
    current_step_path: str | None = None
    input: Any = None
    output: Any = None
    error: Any = None
    workflow_id: str | None = None
    trigger_event_id: str | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    parent_step_path: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    last_seq: int = 0
    continued_as_new_count: int = 0
    semantics_version: int | None = None
    # the Temporal execution and seq a RunReset last rebuilt the run from
    reset_execution_id: str | None = None
    reset_through_seq: int = 0
    # the record that last changed the row
    source_topic: str = ""
    source_partition: int = 0
    source_offset: int = 0
    source_event_id: str | None = None


RUN_COLUMNS: tuple[str, ...] = tuple(RunRow.__dataclass_fields__)


def _row_of(fields: dict[str, Any]) -> RunRow:
    """A RunRow whose __dict__ is ``fields`` (every field, nothing else), without
    ``__init__``: the fold makes one row per event, and the constructor, or
    ``dataclasses.replace``, costs several microseconds for twenty-odd fields."""
    new = object.__new__(RunRow)
    object.__setattr__(new, "__dict__", fields)
    return new


def _evolve(row: RunRow, **changes: Any) -> RunRow:
    """``dataclasses.replace`` without re-running ``__init__`` (see _row_of)."""
    fields = vars(row).copy()
    fields.update(changes)
    return _row_of(fields)


class RunState(NamedTuple):
    """What folding the next event of a run needs to know. (A named tuple rather than a
    frozen dataclass: the fold makes one per event, and the tuple is several times
    cheaper to build.)"""

    row: RunRow
    # wait ids not yet resolved: the run is WAITING while this is non-empty
    open_waits: frozenset[str] = frozenset()
    # (step_path, started_seq) of steps started and not completed, oldest first
    open_steps: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Folded:
    state: RunState | None
    changes: tuple[Change, ...]
    applied: bool


def _error(error: RunError | None) -> dict[str, Any] | None:
    return None if error is None else error.model_dump(mode="json")


def fold_runtime(event: RuntimeEvent, at: Coordinates, state: RunState | None) -> Folded:
    """Apply one runtime event to the state of its run."""
    folded = fold_rows(event, at, state)
    if folded is None:
        return Folded(state, (), applied=False)
    new_state, changes = folded
    run = Upsert(RUNS, {"run_id": new_state.row.run_id}, run_values(new_state.row))
    return Folded(new_state, (*changes, run), applied=True)


def fold_rows(
    event: RuntimeEvent, at: Coordinates, state: RunState | None
) -> tuple[RunState, tuple[Change, ...]] | None:
    """``fold_runtime`` without the ``workflow_runs`` change, which the applier writes
    once per run and batch from the final state; None when the event is stale."""
    # Dispatch on the exact class (the union's members have no subclasses): each
    # isinstance on a pydantic model goes through its metaclass, about 0.1 µs, and a
    # chain of them ran on every event.
    if type(event) is RunReconciled:
        return _fold_reconciled(event, at, state)
    if type(event) is RunReset:
        return _fold_reset(event, at, state)
    if state is not None and event.seq <= state.row.last_seq:
        return None
    if state is None:
        state = RunState(RunRow(run_id=event.run_id, tenant=event.tenant))
    row = state.row
    run_id = event.run_id
    seq = event.seq
    when = utc(event.occurred_at)
    event_id = str(event.event_id)
    topic, partition, offset = at
    # The new row's fields, in one dict that becomes its __dict__ (see _row_of): a
    # copy, whose keys are all there already, then set in place, is the cheapest.
    new: dict[str, Any] = vars(row).copy()
    new["last_seq"] = seq
    new["updated_at"] = when
    new["source_topic"] = topic
    new["source_partition"] = partition
    new["source_offset"] = offset
    new["source_event_id"] = event_id
    open_waits = state.open_waits
    open_steps = state.open_steps
    change: Change | None = None
    base = {
        "tenant": event.tenant,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "source_event_id": event_id,
    }

    if type(event) is StepStarted:
        step_started = event.data
        open_steps = (*open_steps, (step_started.step_path, seq))
        new["current_step_path"] = step_started.step_path
        change = Upsert(
            STEPS,
            {"run_id": run_id, "started_seq": seq},
            {
                **base,
                "step_path": step_started.step_path,
                "step_id": step_started.step_id,
                "step_type": step_started.step_type,
                "iteration": step_started.iteration,
                "status": "RUNNING",
                "output": None,
                "error": None,
                "started_at": when,
                "completed_at": None,
                "completed_seq": None,
            },
        )
    elif type(event) is StepCompleted:
        step_completed = event.data
        started = [s for path, s in open_steps if path == step_completed.step_path]
        # The innermost open execution of that path is the one completing.
        started_seq = started[-1] if started else seq
        open_steps = tuple(s for s in open_steps if s[1] != started_seq)
        values: dict[str, Any] = {
            **base,
            "step_path": step_completed.step_path,
            "step_id": step_completed.step_id,
            "step_type": step_completed.step_type,
            "status": step_completed.status,
            "output": step_completed.output,
            "error": _error(step_completed.error),
            "completed_at": when,
            "completed_seq": seq,
        }
        if not started:
            values["started_at"] = None
        change = Upsert(STEPS, {"run_id": run_id, "started_seq": started_seq}, values)
        if row.current_step_path == step_completed.step_path:
            new["current_step_path"] = open_steps[-1][0] if open_steps else None
    elif type(event) is RunStarted:
        run_started = event.data
        new.update(
            definition_id=run_started.definition_id,
            version=run_started.version,
            definition_hash=run_started.definition_hash,
            input=run_started.input,
            workflow_id=run_started.workflow_id,
            trigger_event_id=run_started.trigger_event_id,
            parent_run_id=run_started.parent_run_id,
            root_run_id=run_started.root_run_id or run_started.parent_run_id or run_id,
            parent_step_path=run_started.parent_step_path,
            semantics_version=run_started.semantics_version,
            started_at=when,
        )
    elif type(event) is WaitCreated:
        wait_created = event.data
        open_waits = open_waits | {wait_created.wait_id}
        change = Upsert(
            WAITS,
            {"run_id": run_id, "wait_id": wait_created.wait_id},
            {
                **base,
                "wait_type": wait_created.wait_type,
                "step_path": wait_created.step_path,
                "event_type": wait_created.event_type,
                "correlation_key": wait_created.correlation_key,
                "filters": [f.model_dump(mode="json") for f in wait_created.filters],
                "timeout_at": utc(wait_created.timeout_at),
                "task_id": wait_created.task_id,
                "status": "OPEN",
                "created_at": when,
                "resolved_at": None,
                "matched_event_id": None,
                "created_seq": seq,
                "resolved_seq": None,
            },
        )
    elif type(event) is WaitResolved:
        wait_resolved = event.data
        open_waits = open_waits - {wait_resolved.wait_id}
        change = Upsert(
            WAITS,
            {"run_id": run_id, "wait_id": wait_resolved.wait_id},
            {
                **base,
                "status": wait_resolved.resolution,
                "resolved_at": when,
                "matched_event_id": wait_resolved.matched_event_id,
                "resolved_seq": seq,
            },
        )
    elif type(event) is ActionInvocation:
        action_invocation = event.data
        change = Upsert(
            ACTIONS,
            {"run_id": run_id, "seq": seq},
            {
                **base,
                "invocation_id": action_invocation.invocation_id,
                "step_path": action_invocation.step_path,
                "action": action_invocation.action,
                "version": action_invocation.version,
                "attempt": action_invocation.attempt,
                "idempotency_key": action_invocation.idempotency_key,
                "input": action_invocation.input,
                "status": action_invocation.status,
                "output": action_invocation.output,
                "error": _error(action_invocation.error),
                "cached": action_invocation.cached,
                "occurred_at": when,
            },
        )
    elif type(event) is HumanTaskCreated:
        human_task_created = event.data
        change = Upsert(
            TASKS,
            {"task_id": human_task_created.task_id},
            {
                **base,
                "run_id": run_id,
                "step_path": human_task_created.step_path,
                "task_type": human_task_created.task_type,
                "title": human_task_created.title,
                "description": human_task_created.description,
                "context": human_task_created.context,
                "form_schema": human_task_created.form_schema,
                "status": "OPEN",
                "response": None,
                "completed_by": None,
                "created_at": when,
                "completed_at": None,
            },
        )
    elif type(event) is HumanTaskCompleted:
        human_task_completed = event.data
        change = Upsert(
            TASKS,
            {"task_id": human_task_completed.task_id},
            {
                **base,
                "run_id": run_id,
                "status": human_task_completed.status,
                "response": human_task_completed.response,
                "completed_by": human_task_completed.completed_by,
                "completed_at": when,
            },
        )
    elif type(event) is RunLog:
        # Run-control requests (e.g. a cancel request) arrive here too: they are
        # recorded, never turned into a status; only the workflow's RunCompleted is (or
        # Temporal's own verdict, RunReconciled).
        run_log = event.data
        change = Upsert(
            LOGS,
            {"run_id": run_id, "seq": seq},
            {
                **base,
                "level": run_log.level,
                "message": run_log.message,
                "details": run_log.details,
                "occurred_at": when,
            },
        )
    elif type(event) is RunCompleted:
        run_completed = event.data
        new.update(
            status=run_completed.status,
            output=run_completed.output,
            error=_error(run_completed.error),
            completed_at=when,
            current_step_path=None,
        )
    elif type(event) is RunContinuedAsNew:
        new["continued_as_new_count"] = row.continued_as_new_count + 1

    if new["status"] not in TERMINAL:
        new["status"] = "WAITING" if open_waits else "RUNNING"
    new_state = RunState(_row_of(new), open_waits, open_steps)
    return new_state, (() if change is None else (change,))


def _fold_reconciled(
    event: RunReconciled, at: Coordinates, state: RunState | None
) -> tuple[RunState, tuple[Change, ...]] | None:
    """Temporal closed the run: it ends with Temporal's status, its open waits are
    CANCELED and its open steps end with the same status. A run already closed keeps
    its end (a copy of the record, or a verdict on a run that did finish)."""
    if state is None:
        state = RunState(RunRow(run_id=event.run_id, tenant=event.tenant))
    row = state.row
    if row.status in TERMINAL:
        return None
    data = event.data
    when = utc(data.closed_at)
    event_id = str(event.event_id)
    base = {"tenant": event.tenant, **at.provenance(event_id)}
    changes: list[Change] = [
        Upsert(
            WAITS,
            {"run_id": event.run_id, "wait_id": wait_id},
            {**base, "status": "CANCELED", "resolved_at": when, "resolved_seq": event.seq},
        )
        for wait_id in sorted(state.open_waits)
    ]
    changes.extend(
        Upsert(
            STEPS,
            {"run_id": event.run_id, "started_seq": started_seq},
            {
                **base,
                "step_path": path,
                "status": data.status,
                "completed_at": when,
                "completed_seq": event.seq,
            },
        )
        for path, started_seq in state.open_steps
    )
    new_row = _evolve(
        row,
        status=data.status,
        error={
            "category": "Temporal",
            "code": data.status,
            "message": data.reason or f"Temporal closed the run: {data.status}",
            "details": {"identity": data.identity, "execution_id": data.execution_id},
        },
        completed_at=when,
        updated_at=when,
        current_step_path=None,
        last_seq=max(row.last_seq, event.seq),
        **at.provenance(event_id),
    )
    return RunState(new_row), tuple(changes)


def _fold_reset(
    event: RunReset, at: Coordinates, state: RunState | None
) -> tuple[RunState, tuple[Change, ...]] | None:
    """Rebuild the run from the events of Temporal's history that the record carries."""
    data = event.data
    if (
        state is not None
        and state.row.reset_execution_id == data.execution_id
        and state.row.reset_through_seq >= data.through_seq
    ):
        return None
    rebuilt = RunState(RunRow(run_id=event.run_id, tenant=event.tenant))
    changes: list[Change] = [DeleteRun(table, event.run_id) for table in RUN_CHILD_TABLES]
    for raw in sorted(data.events, key=lambda e: int(e.get("seq", 0))):
        try:
            inner = RUNTIME_EVENT_ADAPTER.validate_python(raw)
        except ValidationError:
            # The history is Temporal's and was valid when emitted; a record that
            # breaks the schema now changes nothing rather than stopping the rebuild.
            continue
        if isinstance(inner, RunReconciled | RunReset) or inner.run_id != event.run_id:
            continue
        folded = fold_rows(inner, at, rebuilt)
        if folded is None:
            continue
        rebuilt, inner_changes = folded
        changes.extend(inner_changes)
    new_row = _evolve(
        rebuilt.row,
        reset_execution_id=data.execution_id,
        reset_through_seq=data.through_seq,
        last_seq=max(rebuilt.row.last_seq, data.through_seq),
        **at.provenance(str(event.event_id)),
    )
    return RunState(new_row, rebuilt.open_waits, rebuilt.open_steps), tuple(changes)


def run_values(row: RunRow) -> dict[str, Any]:
    """The ``workflow_runs`` columns of ``row`` other than the key."""
    values = dict(vars(row))
    del values["run_id"]
    return values
