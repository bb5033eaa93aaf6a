"""Temporal's verdicts in the tables, without I/O: the reconciler's decision, the folds
of RunReconciled and RunReset (on their own and through the write path into SQLite),
the routing index, and the operator audit's fold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from processors.router_index import RouterIndex
from projections import db, migrate, queries
from projections import tables as t
from projections.apply import apply_batch
from projections.changes import ChangeSet, Coordinates
from projections.fold_runtime import RunState, fold_runtime
from projections.records import Incoming
from projections.synthetic import runtime_event
from schemas.operator import OperatorAction
from schemas.runtime import RUNTIME_EVENT_ADAPTER, RunReconciled, RunReset
from topics.serde import encode, encode_runtime
from workflows import reconcile
from workflows.reconciler import visibility_query

RUN = "run-r"
CLOSED_AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def ev(seq: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return runtime_event(RUN, seq, kind, data).model_dump(mode="json")


STARTED = ev(1, "RunStarted", {"definition_id": "d", "version": 1, "definition_hash": "h"})
STEP = ev(2, "StepStarted", {"step_path": "root.steps[0]", "step_type": "event.wait"})
FIRST_WAIT = ev(
    3,
    "WaitCreated",
    {
        "wait_id": "w1",
        "wait_type": "event",
        "step_path": "root.steps[0]",
        "event_type": "go",
        "correlation_key": "k",
    },
)
RESOLVED = ev(4, "WaitResolved", {"wait_id": "w1", "resolution": "RESOLVED"})
STEP_DONE = ev(
    5,
    "StepCompleted",
    {"step_path": "root.steps[0]", "step_type": "event.wait", "status": "SUCCEEDED"},
)
SECOND_STEP = ev(6, "StepStarted", {"step_path": "root.steps[1]", "step_type": "event.wait"})
SECOND_WAIT = ev(
    7,
    "WaitCreated",
    {
        "wait_id": "w2",
        "wait_type": "event",
        "step_path": "root.steps[1]",
        "event_type": "next",
        "correlation_key": "k",
    },
)
HISTORY = [STARTED, STEP, FIRST_WAIT, RESOLVED, STEP_DONE, SECOND_STEP, SECOND_WAIT]


def closed(status: reconcile.Verdict = "TERMINATED", execution: str = "e1") -> reconcile.Closed:
    return reconcile.Closed("flowledger:run:run-r", execution, status, CLOSED_AT, "stop", "ops")


def current(
    events: list[dict[str, Any]], execution: str = "e1", reset: bool = False
) -> reconcile.Current:
    return reconcile.Current(execution, RUN, "acme", tuple(events), reset, "back to wait 1")


def decided(c: reconcile.Closed, cur: reconcile.Current) -> RunReconciled | RunReset:
    record = reconcile.decide(c, cur)
    assert record is not None
    return record


def fold_events(events: list[Any], state: RunState | None = None) -> tuple[RunState, ChangeSet]:
    changes = ChangeSet()
    for offset, event in enumerate(events):
        folded = fold_runtime(event, Coordinates("rt", 0, offset), state)
        state = folded.state
        changes.extend(folded.changes)
    assert state is not None
    return state, changes


def typed(raw: dict[str, Any]) -> Any:
    return RUNTIME_EVENT_ADAPTER.validate_python(raw)


# -- the decision --------------------------------------------------------------------


def test_a_terminated_run_gets_one_reconciled_record_after_its_last_seq() -> None:
    record = reconcile.decide(closed(), current(HISTORY))
    assert isinstance(record, RunReconciled)
    assert record.seq == 8 and record.run_id == RUN and record.tenant == "acme"
    assert record.data.status == "TERMINATED" and record.data.reason == "stop"
    assert record.data.identity == "ops" and record.data.execution_id == "e1"
    # Deterministic, and apart from the ids workflow code gives its events.
    assert record == reconcile.decide(closed(), current(HISTORY))
    assert record.event_id not in {uuid.UUID(e["event_id"]) for e in HISTORY}


def test_a_timed_out_run_keeps_temporals_status() -> None:
    record = reconcile.decide(closed("TIMED_OUT"), current(HISTORY))
    assert isinstance(record, RunReconciled) and record.data.status == "TIMED_OUT"


def test_a_reset_carries_the_new_executions_events() -> None:
    record = reconcile.decide(closed(), current(HISTORY[:3], "e2", reset=True))
    assert isinstance(record, RunReset)
    assert record.data.execution_id == "e2" and record.data.reset_from_execution_id == "e1"
    assert record.data.through_seq == 3 and [e["seq"] for e in record.data.events] == [1, 2, 3]
    assert record.data.reason == "back to wait 1"


def test_an_execution_superseded_without_a_reset_is_left_alone() -> None:
    assert reconcile.decide(closed(), current(HISTORY, "e2", reset=False)) is None


def test_emitted_keeps_one_event_per_seq_in_order() -> None:
    assert reconcile.emitted([[STEP, STARTED], [STEP, FIRST_WAIT]]) == [STARTED, STEP, FIRST_WAIT]


def test_the_visibility_query_names_our_runs_only() -> None:
    query = visibility_query("flowledger-runtime", CLOSED_AT)
    assert "WorkflowType = 'flowledger.interpreter'" in query
    assert "TaskQueue = 'flowledger-runtime'" in query
    assert "ExecutionStatus = 'Terminated'" in query and "'TimedOut'" in query
    assert "CloseTime > '2026-12-01T12:00:00Z'" in query


# -- the folds -------------------------------------------------------------------------


def test_reconciled_ends_the_run_and_cancels_its_open_waits_once() -> None:
    state, _ = fold_events([typed(e) for e in HISTORY])
    assert state.row.status == "WAITING"
    record = decided(closed(), current(HISTORY))
    folded = fold_runtime(record, Coordinates("rt", 0, 99), state)
    assert folded.applied and folded.state is not None
    assert folded.state.row.status == "TERMINATED"
    assert folded.state.row.completed_at == CLOSED_AT
    assert folded.state.row.error["message"] == "stop"
    assert folded.state.row.current_step_path is None
    changes = ChangeSet()
    changes.extend(folded.changes)
    assert changes.upserts[("workflow_run_waits", (RUN, "w2"))]["status"] == "CANCELED"
    assert changes.upserts[("workflow_run_steps", (RUN, 6))]["status"] == "TERMINATED"
    assert ("workflow_run_waits", (RUN, "w1")) not in changes.upserts
    again = fold_runtime(record, Coordinates("rt", 0, 100), folded.state)
    assert not again.applied


def test_reconciled_leaves_a_run_that_finished_itself() -> None:
    done = typed(ev(8, "RunCompleted", {"status": "SUCCEEDED"}))
    state, _ = fold_events([*(typed(e) for e in HISTORY), done])
    record = decided(closed(), current(HISTORY))
    assert not fold_runtime(record, Coordinates("rt", 0, 99), state).applied


def test_reset_rebuilds_the_run_from_temporals_history() -> None:
    state, _ = fold_events([typed(e) for e in HISTORY])
    record = decided(closed(), current(HISTORY[:3], "e2", reset=True))
    folded = fold_runtime(record, Coordinates("rt", 0, 99), state)
    assert folded.applied and folded.state is not None
    assert folded.state.row.status == "WAITING"
    assert folded.state.open_waits == frozenset({"w1"})
    assert folded.state.row.last_seq == 3 and folded.state.row.reset_execution_id == "e2"
    changes = ChangeSet()
    changes.extend(folded.changes)
    assert changes.run_deletes >= {("workflow_run_waits", RUN), ("workflow_run_steps", RUN)}
    assert changes.upserts[("workflow_run_waits", (RUN, "w1"))]["status"] == "OPEN"
    # The new execution's own events after the reset point are taken by seq again.
    after = fold_runtime(typed(RESOLVED), Coordinates("rt", 0, 100), folded.state)
    assert after.applied
    # A copy of the record (or an older one of the same execution) changes nothing.
    assert not fold_runtime(record, Coordinates("rt", 0, 101), after.state).applied


# -- through the write path --------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = db.engine(f"sqlite:///{tmp_path / 'p.db'}")
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def _runtime(offset: int, value: bytes) -> Incoming:
    return Incoming("runtime", Coordinates("flowledger.runtime.v1", 0, offset), RUN.encode(), value)


def test_reset_in_the_database_removes_what_came_after_the_reset_point(engine: Engine) -> None:
    raw = [encode_runtime(typed(e)) for e in HISTORY]
    with engine.begin() as conn:
        apply_batch(conn, [_runtime(i, v) for i, v in enumerate(raw)])
    reset = reconcile.decide(closed(), current(HISTORY[:3], "e2", reset=True))
    assert reset is not None
    # The reset execution's first live event reached Kafka before the record (stale
    # then); the record carries it, and later live events are taken by seq.
    stale = encode_runtime(typed(RESOLVED))
    with engine.begin() as conn:
        apply_batch(
            conn, [_runtime(7, stale), _runtime(8, encode_runtime(reset)), _runtime(9, stale)]
        )
    with db.reading(engine.url.render_as_string(hide_password=False)) as conn:
        shown = queries.show_run(conn, RUN)
    assert shown["run"]["status"] == "RUNNING"
    assert [s["started_seq"] for s in shown["steps"]] == [2]
    assert [(w["wait_id"], w["status"]) for w in shown["waits"]] == [("w1", "RESOLVED")]


def test_reconciled_in_the_database_ends_the_run_and_its_open_rows(engine: Engine) -> None:
    raw = [encode_runtime(typed(e)) for e in HISTORY]
    record = decided(closed(), current(HISTORY))
    with engine.begin() as conn:
        apply_batch(conn, [_runtime(i, v) for i, v in enumerate(raw)])
    with engine.begin() as conn:
        result = apply_batch(conn, [_runtime(7, encode_runtime(record))])
    assert result.errors == 0 and result.applied == 1
    with db.reading(engine.url.render_as_string(hide_password=False)) as conn:
        shown = queries.show_run(conn, RUN)
    assert shown["run"]["status"] == "TERMINATED"
    assert [(w["wait_id"], w["status"]) for w in shown["waits"]] == [
        ("w1", "RESOLVED"),
        ("w2", "CANCELED"),
    ]
    assert [(s["started_seq"], s["status"]) for s in shown["steps"]] == [
        (2, "SUCCEEDED"),
        (6, "TERMINATED"),
    ]


def test_operator_actions_are_projected(engine: Engine) -> None:
    action = OperatorAction(
        action_id=uuid.uuid4(),
        action="resume",
        requested_by="dana",
        requested_at=CLOSED_AT,
        outcome="refused",
        run_id=RUN,
        reason="please",
        code="WORKFLOW_TEMPORAL_ACTION_UNSUPPORTED",
    )
    item = Incoming("operators", Coordinates("flowledger.operators.v1", 0, 0), None, encode(action))
    with engine.begin() as conn:
        apply_batch(conn, [item])
        apply_batch(conn, [item._replace(at=Coordinates("flowledger.operators.v1", 0, 1))])
    with engine.connect() as conn:
        rows = conn.execute(select(t.workflow_operator_actions)).mappings().all()
        listed = queries.list_operator_actions(conn, run_id=RUN, outcome="refused")
    assert len(rows) == 1
    assert listed[0]["action"] == "resume" and listed[0]["requested_by"] == "dana"
    assert listed[0]["code"] == "WORKFLOW_TEMPORAL_ACTION_UNSUPPORTED"


# -- the routing index -----------------------------------------------------------------


def test_the_router_stops_routing_to_a_reconciled_run_and_follows_a_reset() -> None:
    index = RouterIndex()
    for raw in HISTORY:
        index.apply(typed(raw))
    assert [w.wait_id for w in index.matching("acme", "next", "k")] == ["w2"]
    reset = reconcile.decide(closed(), current(HISTORY[:3], "e2", reset=True))
    assert reset is not None
    index.apply(reset)
    assert index.matching("acme", "next", "k") == []
    assert [w.wait_id for w in index.matching("acme", "go", "k")] == ["w1"]
    terminated = reconcile.decide(closed(execution="e2"), current(HISTORY[:3], "e2"))
    assert terminated is not None
    index.apply(terminated)
    assert index.matching("acme", "go", "k") == []
