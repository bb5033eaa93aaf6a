"""The pure folds: record + state -> row changes, without any I/O."""

from __future__ import annotations

from typing import Any

from projections.changes import ChangeSet, Coordinates, Delete, Upsert
from projections.fold_ingress import (
    AuditState,
    fold_audit,
    fold_definition,
    fold_definition_tombstone,
)
from projections.fold_runtime import Folded, RunState, fold_runtime
from projections.synthetic import audit_record, definition_record, runtime_event
from schemas.audit import AuditRecord, Delivery

RUN = "run-1"


def at(offset: int, partition: int = 0, topic: str = "flowledger.runtime.v1") -> Coordinates:
    return Coordinates(topic, partition, offset)


def started(seq: int = 1) -> Any:
    return runtime_event(
        RUN,
        seq,
        "RunStarted",
        {
            "definition_id": "orders",
            "version": 3,
            "definition_hash": "a" * 64,
            "input": {"order": 7},
            "parent_run_id": "parent-1",
        },
    )


def fold_all(events: list[Any]) -> tuple[RunState | None, ChangeSet, list[Folded]]:
    state: RunState | None = None
    changes = ChangeSet()
    results = []
    for offset, event in enumerate(events):
        folded = fold_runtime(event, at(offset), state)
        state = folded.state
        changes.extend(folded.changes)
        results.append(folded)
    return state, changes, results


def row(changes: ChangeSet, table: str, *key: Any) -> dict[str, Any]:
    return changes.upserts[(table, tuple(key))]


def test_run_started_creates_the_run_row() -> None:
    state, changes, _ = fold_all([started()])
    assert state is not None
    run = row(changes, "workflow_runs", RUN)
    assert run["status"] == "RUNNING"
    assert run["definition_id"] == "orders"
    assert run["version"] == 3
    assert run["input"] == {"order": 7}
    assert run["parent_run_id"] == "parent-1"
    assert run["root_run_id"] == "parent-1"
    assert run["last_seq"] == 1
    assert run["started_at"] is not None
    assert (run["source_topic"], run["source_partition"], run["source_offset"]) == (
        "flowledger.runtime.v1",
        0,
        0,
    )
    assert run["source_event_id"] == str(started().event_id)


def test_steps_track_the_current_step_and_nesting() -> None:
    events = [
        started(),
        runtime_event(
            RUN, 2, "StepStarted", {"step_path": "root.steps[0]", "step_type": "control.if"}
        ),
        runtime_event(
            RUN,
            3,
            "StepStarted",
            {"step_path": "root.steps[0].then.steps[0]", "step_type": "assign"},
        ),
    ]
    state, changes, _ = fold_all(events)
    assert state is not None
    assert state.row.current_step_path == "root.steps[0].then.steps[0]"
    events.append(
        runtime_event(
            RUN,
            4,
            "StepCompleted",
            {
                "step_path": "root.steps[0].then.steps[0]",
                "step_type": "assign",
                "status": "SUCCEEDED",
                "output": {"x": 1},
            },
        )
    )
    state, changes, _ = fold_all(events)
    assert state is not None
    assert state.row.current_step_path == "root.steps[0]"
    inner = row(changes, "workflow_run_steps", RUN, 3)
    assert inner["status"] == "SUCCEEDED"
    assert inner["output"] == {"x": 1}
    assert inner["completed_seq"] == 4
    assert row(changes, "workflow_run_steps", RUN, 2)["status"] == "RUNNING"


def test_a_step_in_a_loop_gets_one_row_per_execution() -> None:
    events = [started()]
    for n in range(2):
        seq = len(events) + 1
        data = {"step_path": "root.steps[1].body.steps[0]", "step_type": "assign", "iteration": n}
        events.append(runtime_event(RUN, seq, "StepStarted", data))
        done = {"step_path": data["step_path"], "step_type": "assign", "status": "SUCCEEDED"}
        events.append(runtime_event(RUN, seq + 1, "StepCompleted", done))
    _, changes, _ = fold_all(events)
    steps = [v for (table, _), v in changes.upserts.items() if table == "workflow_run_steps"]
    assert [(s["started_seq"], s["iteration"], s["status"]) for s in steps] == [
        (2, 0, "SUCCEEDED"),
        (4, 1, "SUCCEEDED"),
    ]


def test_waiting_while_any_wait_is_open_then_timed_out() -> None:
    def created(seq: int, wait_id: str) -> Any:
        return runtime_event(
            RUN,
            seq,
            "WaitCreated",
            {
                "wait_id": wait_id,
                "wait_type": "event",
                "step_path": "root.steps[0]",
                "event_type": "order.paid",
                "correlation_key": "o-7",
            },
        )

    events = [started(), created(2, "w1"), created(3, "w2")]
    state, changes, _ = fold_all(events)
    assert state is not None and state.row.status == "WAITING"
    assert row(changes, "workflow_run_waits", RUN, "w1")["status"] == "OPEN"

    events.append(
        runtime_event(RUN, 4, "WaitResolved", {"wait_id": "w1", "resolution": "TIMED_OUT"})
    )
    state, changes, _ = fold_all(events)
    assert state is not None and state.row.status == "WAITING"  # w2 is still open
    assert row(changes, "workflow_run_waits", RUN, "w1")["status"] == "TIMED_OUT"

    events.append(
        runtime_event(
            RUN,
            5,
            "WaitResolved",
            {"wait_id": "w2", "resolution": "RESOLVED", "matched_event_id": "e9"},
        )
    )
    state, changes, _ = fold_all(events)
    assert state is not None and state.row.status == "RUNNING"
    w2 = row(changes, "workflow_run_waits", RUN, "w2")
    assert (w2["status"], w2["matched_event_id"], w2["resolved_seq"]) == ("RESOLVED", "e9", 5)


def test_the_semantics_version_of_run_started_is_on_the_run_row() -> None:
    pinned = runtime_event(
        RUN,
        1,
        "RunStarted",
        {
            "definition_id": "orders",
            "version": 3,
            "definition_hash": "a" * 64,
            "semantics_version": 4,
        },
    )
    _, changes, _ = fold_all([pinned])
    assert row(changes, "workflow_runs", RUN)["semantics_version"] == 4
    # A run started before runs pinned their semantics has none.
    _, changes, _ = fold_all([started()])
    assert row(changes, "workflow_runs", RUN)["semantics_version"] is None


def test_a_cached_invocation_says_so() -> None:
    data = {
        "invocation_id": "inv-1",
        "step_path": "root.steps[0]",
        "action": "core.noop",
        "version": 1,
        "idempotency_key": "order-7",
        "status": "SUCCEEDED",
        "output": {"value": 1},
    }
    events = [
        started(),
        runtime_event(RUN, 2, "ActionInvocation", data),
        runtime_event(RUN, 3, "ActionInvocation", {**data, "cached": True}),
    ]
    _, changes, _ = fold_all(events)
    assert row(changes, "workflow_action_invocations", RUN, 2)["cached"] is False
    assert row(changes, "workflow_action_invocations", RUN, 3)["cached"] is True


def test_a_refused_task_response_is_recorded_as_refused() -> None:
    events = [
        started(),
        runtime_event(
            RUN,
            2,
            "HumanTaskCreated",
            {
                "task_id": "t1",
                "step_path": "root.steps[0]",
                "task_type": "approve",
                "title": "Approve?",
            },
        ),
        runtime_event(
            RUN,
            3,
            "HumanTaskCompleted",
            {"task_id": "t1", "response": {"ok": 5}, "completed_by": "eve", "status": "REFUSED"},
        ),
    ]
    _, changes, _ = fold_all(events)
    task = row(changes, "workflow_human_tasks", "t1")
    assert (task["status"], task["completed_by"]) == ("REFUSED", "eve")


def test_action_invocations_are_a_ledger() -> None:
    data = {
        "invocation_id": "inv-1",
        "step_path": "root.steps[0]",
        "action": "http.post",
        "version": 1,
        "status": "FAILED",
        "error": {"category": "ActionError", "code": "HTTP_503", "message": "down"},
    }
    events = [
        started(),
        runtime_event(RUN, 2, "ActionInvocation", data),
        runtime_event(
            RUN, 3, "ActionInvocation", {**data, "attempt": 2, "status": "SUCCEEDED", "error": None}
        ),
    ]
    _, changes, _ = fold_all(events)
    first = row(changes, "workflow_action_invocations", RUN, 2)
    second = row(changes, "workflow_action_invocations", RUN, 3)
    assert first["error"]["code"] == "HTTP_503"
    assert (second["attempt"], second["status"]) == (2, "SUCCEEDED")


def test_human_task_created_then_completed() -> None:
    events = [
        started(),
        runtime_event(
            RUN,
            2,
            "HumanTaskCreated",
            {
                "task_id": "t1",
                "step_path": "root.steps[0]",
                "task_type": "approve",
                "title": "Approve?",
                "form_schema": {"type": "object"},
            },
        ),
    ]
    _, changes, _ = fold_all(events)
    assert row(changes, "workflow_human_tasks", "t1")["status"] == "OPEN"
    events.append(
        runtime_event(
            RUN,
            3,
            "HumanTaskCompleted",
            {"task_id": "t1", "response": {"ok": True}, "completed_by": "ann"},
        )
    )
    _, changes, _ = fold_all(events)
    task = row(changes, "workflow_human_tasks", "t1")
    assert (task["status"], task["response"], task["completed_by"]) == (
        "COMPLETED",
        {"ok": True},
        "ann",
    )
    assert task["form_schema"] == {"type": "object"}  # kept from the creation


def test_cancel_request_log_never_changes_status() -> None:
    events = [
        started(),
        runtime_event(
            RUN,
            2,
            "RunLog",
            {"level": "WARNING", "message": "cancel requested", "details": {"by": "ops"}},
        ),
    ]
    state, changes, _ = fold_all(events)
    assert state is not None and state.row.status == "RUNNING"
    log = row(changes, "workflow_run_logs", RUN, 2)
    assert (log["level"], log["message"]) == ("WARNING", "cancel requested")
    events.append(runtime_event(RUN, 3, "RunCompleted", {"status": "CANCELED"}))
    state, changes, _ = fold_all(events)
    assert state is not None and state.row.status == "CANCELED"
    assert state.row.completed_at is not None


def test_run_completed_failed_and_continued_as_new() -> None:
    events = [
        started(),
        runtime_event(RUN, 2, "RunContinuedAsNew", {"next_seq": 3, "steps_executed": 100}),
        runtime_event(
            RUN,
            3,
            "RunCompleted",
            {"status": "FAILED", "error": {"category": "ActionError", "code": "X", "message": "m"}},
        ),
    ]
    state, changes, _ = fold_all(events)
    assert state is not None
    run = row(changes, "workflow_runs", RUN)
    assert run["status"] == "FAILED"
    assert run["error"]["code"] == "X"
    assert run["continued_as_new_count"] == 1
    assert run["current_step_path"] is None
    # A log after the end keeps the terminal status.
    folded = fold_runtime(runtime_event(RUN, 4, "RunLog", {"message": "late"}), at(9), state)
    assert folded.state is not None and folded.state.row.status == "FAILED"


def test_duplicates_and_stale_seqs_change_nothing() -> None:
    events = [started(), runtime_event(RUN, 2, "RunLog", {"message": "a"})]
    state, _, _ = fold_all(events)
    for stale in (events[0], events[1], runtime_event(RUN, 2, "RunLog", {"message": "other"})):
        folded = fold_runtime(stale, at(50), state)
        assert folded.applied is False
        assert folded.changes == ()
        assert folded.state == state


def test_an_event_before_run_started_makes_a_stub_run() -> None:
    folded = fold_runtime(runtime_event(RUN, 5, "RunLog", {"message": "x"}), at(0), None)
    assert folded.state is not None
    assert folded.state.row.definition_id is None
    assert folded.state.row.last_seq == 5


def test_audit_dedups_by_event_id_and_unions_deliveries() -> None:
    first = audit_record(1, "run-a")
    folded = fold_audit(first, at(10, topic="flowledger.audit.v1"), None)
    assert folded.applied
    audit = next(
        c for c in folded.changes if isinstance(c, Upsert) and c.table == "workflow_runtime_events"
    )
    assert audit.values["status"] == "matched"
    assert audit.values["audit_count"] == 1

    # The same record read again (a replayed partition) changes nothing.
    again = fold_audit(first, at(10, topic="flowledger.audit.v1"), folded.state)
    assert not again.applied and again.changes == ()

    # A re-audit after a redelivery: latest fields, union of deliveries, first received_at.
    later = AuditRecord.model_validate(
        {
            **first.model_dump(),
            "deliveries": [Delivery(run_id="run-b", kind="start", outcome="started").model_dump()],
            "received_at": "2025-01-02T00:00:00Z",
        }
    )
    second = fold_audit(later, at(11, topic="flowledger.audit.v1"), folded.state)
    assert second.state is not None
    assert second.state.delivery_keys == {"signal:run-a:w0", "start:run-b:"}
    audit = next(
        c for c in second.changes if isinstance(c, Upsert) and c.table == "workflow_runtime_events"
    )
    assert audit.values["delivery_count"] == 2
    assert audit.values["audit_count"] == 2
    assert audit.values["received_at"] == first.received_at
    assert audit.values["last_received_at"].isoformat().startswith("2025-01-02")


def test_audits_of_two_tenants_with_one_event_id_are_two_rows() -> None:
    acme = audit_record(1, "run-a")
    beta = acme.model_copy(update={"tenant": "beta"})
    keys = {
        next(
            c.key["audit_id"]
            for c in fold_audit(r, at(n), None).changes
            if c.table == "workflow_runtime_events"
        )  # type: ignore[union-attr]
        for n, r in enumerate((acme, beta))
    }
    assert keys == {f"acme:{acme.event_id}", f"beta:{acme.event_id}"}


def test_audit_error_and_unmatched_status() -> None:
    error = fold_audit(audit_record(2, None), at(0), None)
    values = next(c for c in error.changes if c.table == "workflow_runtime_events")
    assert isinstance(values, Upsert) and values.values["status"] == "error"
    plain = audit_record(3, None).model_copy(update={"error_code": None})
    folded = fold_audit(plain, at(1), AuditState(0, 0, None, None, 0, frozenset()))
    values = next(c for c in folded.changes if c.table == "workflow_runtime_events")
    assert isinstance(values, Upsert) and values.values["status"] == "unmatched"


def test_an_expired_held_event_is_audited_expired_unless_something_took_it() -> None:
    expired = audit_record(4, None).model_copy(update={"error_code": None, "expired": True})
    values = next(
        c for c in fold_audit(expired, at(1), None).changes if c.table == "workflow_runtime_events"
    )
    assert isinstance(values, Upsert) and values.values["status"] == "expired"
    started = audit_record(5, "run-s").model_copy(update={"error_code": None, "expired": True})
    values = next(
        c for c in fold_audit(started, at(2), None).changes if c.table == "workflow_runtime_events"
    )
    assert isinstance(values, Upsert) and values.values["status"] == "matched"


def test_definitions_and_tombstones() -> None:
    record = definition_record("acme", "orders", 2)
    folded = fold_definition(record, at(4, topic="flowledger.definitions.v1"), None)
    change = folded.changes[0]
    assert isinstance(change, Upsert)
    assert change.key == {"tenant": "acme", "definition_id": "orders", "version": 2}
    assert change.values["trigger_event_type"] == "orders.requested"
    assert not fold_definition(record, at(4), folded.state).applied
    tomb = fold_definition_tombstone("acme:orders:2", at(5), folded.state)
    assert tomb is not None and isinstance(tomb.changes[0], Delete)
    assert fold_definition_tombstone("no-version-here", at(6), None) is None
    # Re-publishing the same version and hash at a later offset changes nothing.
    assert not fold_definition(record, at(9), folded.state).applied


def test_an_identical_audit_copy_at_a_later_offset_changes_nothing() -> None:
    record = audit_record(5, "run-a")
    first = fold_audit(record, at(1), None)
    copy = fold_audit(record, at(2), first.state)
    assert not copy.applied and copy.changes == ()


def test_changeset_coalesces_per_row() -> None:
    changes = ChangeSet()
    changes.add(Upsert("workflow_runs", {"run_id": "r"}, {"status": "RUNNING", "last_seq": 1}))
    changes.add(Upsert("workflow_runs", {"run_id": "r"}, {"status": "WAITING", "last_seq": 2}))
    assert changes.upserts[("workflow_runs", ("r",))] == {
        "run_id": "r",
        "status": "WAITING",
        "last_seq": 2,
    }
    key = {"tenant": "a", "definition_id": "d", "version": 1}
    changes.add(Upsert("workflow_definitions", key, {"hash": "h"}))
    changes.add(Delete("workflow_definitions", key))
    assert ("workflow_definitions", ("a", "d", 1)) not in changes.upserts
    assert len(changes) == 2
