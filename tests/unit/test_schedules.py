"""Schedules without Temporal: publish-time validation of schedule triggers, the plan
of which schedules the definitions want, a scheduled run made concrete, and the fold
of schedule events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections.changes import Coordinates, Upsert
from projections.fold_batch import fold_batch
from projections.fold_schedules import fold_schedule_event
from projections.records import Incoming, decode_all
from schemas.definition_record import DefinitionRecord
from schemas.schedule import ScheduleEvent
from tests.unit.test_interpreter import MemoryHost
from topics.serde import decode_runtime_topic, encode
from workflows.definitions.canonical import definition_hash
from workflows.definitions.schedule_rules import cron_problem
from workflows.definitions.validate import validate
from workflows.interpreter import Interpreter
from workflows.messages import RunInput
from workflows.schedule_plan import catch_up, once_at, schedules_of, stale, wanted
from workflows.scheduled_run import (
    needs_resolving,
    resolve,
    schedule_id,
    scheduled_run_id,
    time_from_workflow_id,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
STEPS = [{"id": "r", "type": "control.return", "output": {"$expr": "payload"}}]


def doc(**extra: Any) -> dict[str, Any]:
    return {"id": "d", "version": 1, "tenant": "acme", "name": "n", "steps": STEPS, **extra}


def problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.path, p.code) for p in validate(document, now=NOW)]


@pytest.mark.parametrize(
    "cron",
    ["0 2 * * *", "*/5 * * * *", "0 9-17 * * MON-FRI", "0 0 1,15 JAN,jul ?", "@daily", "0 0 * * 7"],
)
def test_valid_cron(cron: str) -> None:
    assert cron_problem(cron) is None


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("0 2 * *", "5 fields"),
        ("60 * * * *", "outside 0-59"),
        ("0 24 * * *", "outside 0-23"),
        ("0 0 0 * *", "outside 1-31"),
        ("* * * FOO *", "not a number or a name"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("@fortnightly", "macro"),
    ],
)
def test_invalid_cron(cron: str, why: str) -> None:
    found = cron_problem(cron)
    assert found is not None and why in found


def test_every_schedule_problem_is_listed_with_its_path() -> None:
    found = problems(
        doc(
            triggers=[
                {"type": "schedule", "name": "a", "cron": "61 * * * *"},
                {"type": "schedule", "name": "a", "interval_ms": 5000, "timezone": "Mars/Base"},
                {"type": "schedule", "at": "2020-01-01T00:00:00Z"},
                {"type": "schedule", "name": "b"},
                {"type": "schedule", "name": "c", "cron": "* * * * *", "at": "2030-01-01T00:00Z"},
                {"type": "schedule", "name": "d", "at": "2030-01-01T00:00:00"},
                {"type": "schedule", "name": "e", "interval_ms": 10, "overlap": "sometimes"},
                {
                    "type": "schedule",
                    "name": "f",
                    "cron": "@hourly",
                    "input": {"x": {"$expr": "("}},
                },
            ]
        )
    )
    assert found == [
        ("root.triggers[6].interval_ms", "DEFINITION_FIELD_INVALID"),
        ("root.triggers[6].overlap", "DEFINITION_FIELD_INVALID"),
        ("root.triggers[0].cron", "DEFINITION_SCHEDULE_CRON_INVALID"),
        ("root.triggers[1].name", "DEFINITION_SCHEDULE_DUPLICATE_NAME"),
        ("root.triggers[1].timezone", "DEFINITION_SCHEDULE_TIMEZONE_UNKNOWN"),
        ("root.triggers[2].name", "DEFINITION_FIELD_MISSING"),
        ("root.triggers[2].at", "DEFINITION_SCHEDULE_AT_PAST"),
        ("root.triggers[3]", "DEFINITION_SCHEDULE_SPEC"),
        ("root.triggers[4]", "DEFINITION_SCHEDULE_SPEC"),
        ("root.triggers[5].at", "DEFINITION_FIELD_INVALID"),
        ("root.triggers[7].input.x", "EXPR_SYNTAX"),
    ]


def test_valid_schedule_triggers_pass() -> None:
    assert problems(doc(trigger={"type": "schedule", "cron": "0 2 * * *"})) == []
    assert (
        problems(
            doc(
                triggers=[
                    {
                        "type": "schedule",
                        "name": "nightly",
                        "cron": "0 2 * * *",
                        "timezone": "Europe/Paris",
                        "overlap": "buffer_one",
                        "catchup_window_ms": 60_000,
                        "jitter_ms": 500,
                        "input": {"day": {"$expr": "system.scheduled_at"}},
                    },
                    {"type": "schedule", "name": "tick", "interval_ms": 2000},
                    {"type": "schedule", "name": "launch", "at": "2026-06-02T00:00:00+02:00"},
                ]
            )
        )
        == []
    )


def test_the_event_trigger_is_unchanged() -> None:
    trigger = {"type": "event", "event_type": "order.placed", "payload_mapping": {"id": 1}}
    assert problems(doc(trigger=trigger)) == []


def record(version: int, **extra: Any) -> DefinitionRecord:
    document = doc(version=version, **extra)
    return DefinitionRecord(
        tenant="acme",
        definition_id="d",
        version=version,
        hash=definition_hash(document),
        published_at=NOW,
        definition=document,
    )


def test_the_latest_version_decides_the_schedules() -> None:
    old = record(1, triggers=[{"type": "schedule", "name": "a", "interval_ms": 2000}])
    new = record(2, trigger={"type": "schedule", "cron": "0 2 * * *"})
    plan = wanted([new, old])
    assert list(plan) == [schedule_id("acme", "d", "default")]
    assert plan[schedule_id("acme", "d", "default")].record.version == 2
    assert stale([schedule_id("acme", "d", "a"), *plan], plan) == [schedule_id("acme", "d", "a")]
    assert schedules_of(record(3)) == []


def test_a_new_version_changes_the_fingerprint_and_keeps_the_timing() -> None:
    trigger = [{"type": "schedule", "name": "a", "interval_ms": 2000}]
    one, two = (
        schedules_of(record(1, triggers=trigger))[0],
        schedules_of(record(2, triggers=trigger))[0],
    )
    assert one.fingerprint("q", {}) != two.fingerprint("q", {})
    assert one.spec_fingerprint() == two.spec_fingerprint()
    assert one.fingerprint("q", {}) != one.fingerprint("other-queue", {})


ONCE = {"type": "schedule", "name": "once", "at": "2026-06-01T12:00:00.250+02:00"}
ONCE_AT = datetime(2026, 6, 1, 10, 0, 1, tzinfo=UTC)


def window(trigger: dict[str, Any] = ONCE, **state: Any) -> tuple[datetime, datetime] | None:
    since = state.pop("since", ONCE_AT - timedelta(seconds=3))
    given = {"paused": False, "remaining_actions": 1, "next_action_times": [], "taken": []}
    return catch_up(trigger, since, **{**given, **state})


def test_a_one_time_schedule_runs_at_the_next_whole_second() -> None:
    assert once_at(ONCE) == ONCE_AT
    assert once_at({"at": "2026-06-01T10:00:01Z"}) == ONCE_AT


def test_a_one_time_schedule_whose_time_passed_while_made_is_caught_up_once() -> None:
    # Temporal lists no time for it, its one action is unspent: started, around `at`.
    assert window() == (ONCE_AT - timedelta(seconds=1), ONCE_AT + timedelta(seconds=1))
    jittered = window({**ONCE, "jitter_ms": 1500})
    assert jittered is not None and jittered[1] == ONCE_AT + timedelta(seconds=2.5)
    # Temporal will start it itself, or already has: never a second run.
    assert window(next_action_times=[ONCE_AT]) is None
    assert window(remaining_actions=0) is None
    assert window(taken=[ONCE_AT]) is None
    # Paused, or its time already past when the publish began (it may have run under
    # a schedule deleted since), or not asked for (the reconciler), or recurring.
    assert window(paused=True) is None
    assert window(since=ONCE_AT + timedelta(seconds=1)) is None
    assert window(since=None) is None
    assert window({"type": "schedule", "name": "t", "interval_ms": 2000}) is None


def scheduled_input(**extra: Any) -> RunInput:
    return RunInput(
        run_id="",
        tenant="acme",
        definition_id="d",
        version=3,
        definition_hash="h" * 64,
        definition=doc(),
        schedule_id=schedule_id("acme", "d", "nightly"),
        **extra,
    )


def test_a_scheduled_run_is_made_concrete_from_its_workflow_id() -> None:
    sid = schedule_id("acme", "d", "nightly")
    assert sid == "flowledger:schedule:acme:d:nightly"
    workflow_id = f"{sid}-2026-06-01T02:00:00Z"
    at = time_from_workflow_id(workflow_id, sid)
    assert at == datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
    assert time_from_workflow_id("flowledger:run:x", sid) is None
    run = scheduled_input(
        schedule_input={
            "at": {"$expr": "system.scheduled_at"},
            "who": {"$expr": "system.schedule_id"},
            "fixed": 7,
        }
    )
    assert needs_resolving(run)
    assert at is not None
    done = resolve(run, workflow_id, at)
    assert not needs_resolving(done)
    assert done.run_id == scheduled_run_id(workflow_id) == resolve(run, workflow_id, at).run_id
    assert done.workflow_id == workflow_id and done.scheduled_at == at
    assert done.input == {"at": "2026-06-01T02:00:00Z", "who": sid, "fixed": 7}
    assert done.input_error is None


async def test_a_failing_input_expression_fails_the_run() -> None:
    run = scheduled_input(schedule_input={"x": {"$expr": "system.tenant + 1"}})
    done = resolve(run, "w-1", NOW)
    assert done.input == {} and done.input_error is not None
    host = MemoryHost()
    result = await Interpreter(done, host).execute()
    assert result.status == "FAILED"
    started, completed = host.emitted[0], host.emitted[-1]
    assert started["type"] == "RunStarted"
    assert started["data"]["schedule_id"] == run.schedule_id
    assert completed["data"]["error"]["step_path"] == "root.trigger.input"


def event(kind: str, **extra: Any) -> ScheduleEvent:
    return ScheduleEvent(
        event_id=uuid.uuid4(),
        type=kind,  # type: ignore[arg-type]
        schedule_id=schedule_id("acme", "d", "nightly"),
        tenant="acme",
        definition_id="d",
        name="nightly",
        occurred_at=NOW,
        **extra,
    )


AT = Coordinates("flowledger.runtime.v1", 0, 7)


def test_a_schedule_event_folds_into_its_row() -> None:
    upserted = event(
        "ScheduleUpserted",
        version=2,
        spec={"cron": "0 2 * * *"},
        overlap="skip",
        next_run_at=NOW + timedelta(hours=14),
        last_run_at=NOW - timedelta(hours=10),
    )
    (change,) = fold_schedule_event(upserted, AT)
    assert isinstance(change, Upsert) and change.table == "workflow_schedules"
    assert change.key == {"schedule_id": upserted.schedule_id}
    values = change.values
    assert values["state"] == "active" and values["version"] == 2 and values["paused"] is False
    assert values["next_run_at"] == NOW + timedelta(hours=14)
    assert values["source_offset"] == 7 and values["source_event_id"] == str(upserted.event_id)

    (deleted,) = fold_schedule_event(event("ScheduleDeleted"), AT)
    assert isinstance(deleted, Upsert)
    # What it last ran stays: a delete without a last run time leaves the column alone.
    assert "last_run_at" not in deleted.values
    assert deleted.values["state"] == "deleted" and deleted.values["next_run_at"] is None


def test_schedule_events_share_the_runtime_topic_with_run_events() -> None:
    paused = event("SchedulePaused", version=1, paused=True, overlap="allow_all")
    assert decode_runtime_topic(encode(paused)) == paused
    items = [Incoming("runtime", AT, paused.schedule_id.encode(), encode(paused))]
    decoded, refused = decode_all(items)
    assert refused == []
    folded = fold_batch(decoded, {}, {}, {})
    assert folded.applied == 1 and folded.touched == {}
    (row,) = folded.changes.upserts.values()
    assert row["paused"] is True and row["overlap"] == "allow_all"
    assert json.loads(encode(paused))["type"] == "SchedulePaused"
