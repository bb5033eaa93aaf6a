"""Schedules on Temporal Schedules, against the real stack: recurring and one-time
runs, pause and unpause, a new version replacing the schedule, backfill under the
overlap policy, and the reconciler restoring a schedule deleted by hand.

One worker, one set of topics and one task queue serve the whole module (a schedule
test spends its time waiting for Temporal's clock, not on set-up); every test has its
own tenant and definitions."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import Client
from typer.testing import CliRunner

from flowledger.cli import _register, app
from flowledger.settings import Settings
from projections import db
from projections.tables import workflow_schedules
from tests.integration.runtime_support import projector, record, worker
from tests.stack_fixture import StackHandle, isolated
from tests.waiting import holds, until
from topics import admin
from topics.catalogue import OPERATORS, RUNTIME
from topics.reader import read_all
from workflows import schedules
from workflows.reconciler import Reconciler
from workflows.scheduled_run import schedule_id

_register()


@dataclass
class Env:
    settings: Settings
    client: Client
    files: Path


@pytest.fixture(scope="module")
async def env(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    own = isolated(stack, tmp_path_factory.mktemp("schedules"))
    admin.ensure(own)
    async with worker(own) as client:
        yield Env(own, client, tmp_path_factory.mktemp("definitions"))


async def cli(env: Env, *args: str) -> Any:
    # In a thread: the commands run their own event loop.
    return await asyncio.to_thread(
        CliRunner().invoke, app, list(args), obj={"settings": env.settings}, catch_exceptions=False
    )


def document(
    tenant: str, triggers: list[dict[str, Any]], version: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "id": "nightly",
        "version": version,
        "tenant": tenant,
        "name": "scheduled",
        "triggers": triggers,
        "steps": extra.pop(
            "steps",
            [{"id": "note", "type": "assign", "assign": {"vars.at": {"$expr": "payload.at"}}}],
        ),
        **extra,
    }


async def publish(env: Env, doc: dict[str, Any]) -> dict[str, Any]:
    path = env.files / f"{doc['tenant']}-{doc['version']}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = await cli(env, "definitions", "publish", str(path), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def every(ms: int, name: str = "tick", **extra: Any) -> dict[str, Any]:
    return {
        "type": "schedule",
        "name": name,
        "interval_ms": ms,
        "input": {"at": {"$expr": "system.scheduled_at"}},
        **extra,
    }


def started(env: Env, sid: str) -> list[dict[str, Any]]:
    """The RunStarted events of a schedule's runs, in scheduled order."""
    found = []
    for item in read_all(env.settings, env.settings.topic(RUNTIME)):
        value = json.loads(item.value)
        if value.get("type") == "RunStarted" and value["data"].get("schedule_id") == sid:
            found.append(value)
    return sorted(found, key=lambda e: e["data"]["scheduled_at"])


async def actions(env: Env, sid: str) -> int:
    """How many runs Temporal says the schedule has started."""
    return (await env.client.get_schedule_handle(sid).describe()).info.num_actions


def schedule_row(env: Env, sid: str, **wanted: Any) -> dict[str, Any] | None:
    """The schedule's projected row once its columns hold the `wanted` values."""
    with db.reading(env.settings.database_url()) as conn:
        found = (
            conn.execute(select(workflow_schedules).where(workflow_schedules.c.schedule_id == sid))
            .mappings()
            .first()
        )
    if found is None or any(found[k] != v for k, v in wanted.items()):
        return None
    return dict(found)


def tenant() -> str:
    return f"sched-{uuid.uuid4().hex[:8]}"


async def test_an_interval_schedule_runs_pauses_and_resumes(env: Env) -> None:
    t = tenant()
    sid = schedule_id(t, "nightly", "tick")
    body = await publish(env, document(t, [every(2000)]))
    assert body["schedules"]["created"] == [sid]

    async def two() -> bool:
        return await actions(env, sid) >= 2

    await until(two, 10, "two runs of an every-2-seconds schedule within 10 s")
    runs = await until(
        lambda: (found := started(env, sid)) and len(found) >= 2 and found, 60, "RunStarted"
    )
    first = runs[0]["data"]
    # The run pins its version and records where it came from and when it was meant.
    assert first["version"] == 1 and first["schedule_id"] == sid
    assert (
        first["input"]["at"].replace("Z", "+00:00")
        == datetime.fromisoformat(first["scheduled_at"]).astimezone(UTC).isoformat()
    )

    paused = await cli(env, "schedules", "pause", sid, "--by", "ops-anna", "--json")
    assert paused.exit_code == 0, paused.stdout
    assert json.loads(paused.stdout)["paused"] is True
    frozen = await actions(env, sid)

    async def still() -> bool:
        return await actions(env, sid) == frozen

    await holds(still, 5, "a paused schedule starting no run")

    resumed = await cli(env, "schedules", "unpause", sid, "--by", "ops-anna", "--json")
    assert resumed.exit_code == 0, resumed.stdout

    async def more() -> bool:
        return await actions(env, sid) >= frozen + 1

    await until(more, 15, "a run after unpause")

    audit = [
        json.loads(r.value)
        for r in read_all(env.settings, env.settings.topic(OPERATORS))
        if json.loads(r.value)["details"].get("schedule_id") == sid
    ]
    assert [(a["action"], a["requested_by"], a["outcome"], a["tenant"]) for a in audit] == [
        ("schedule_pause", "ops-anna", "accepted", t),
        ("schedule_unpause", "ops-anna", "accepted", t),
    ]
    listed = await cli(env, "schedules", "list", "--tenant", t, "--json")
    assert [s["schedule_id"] for s in json.loads(listed.stdout)] == [sid]

    # The reconciler's look at Temporal carries the run times into the projection.
    assert sid in await Reconciler(env.settings, env.client).observe_schedules()

    with projector(env.settings):
        projected = await until(
            lambda: schedule_row(env, sid, last_event_type="ScheduleObserved"),
            60,
            "the observed schedule's row",
        )
    assert projected["state"] == "active" and projected["paused"] is False
    assert projected["overlap"] == "skip" and projected["version"] == 1
    assert projected["spec"] == {"interval_ms": 2000}
    assert projected["next_run_at"] is not None and projected["last_run_at"] is not None
    await schedules.delete(env.client, sid)


async def test_a_one_time_schedule_runs_once(env: Env) -> None:
    t = tenant()
    sid = schedule_id(t, "nightly", "once")
    # At least 3 s ahead (4 s, cut to the whole second). A publish slower than that
    # still runs it once: the next test shows how.
    at = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    trigger = {
        "type": "schedule",
        "name": "once",
        "at": at.isoformat(),
        "input": {"at": {"$expr": "system.scheduled_at"}},
    }
    await publish(env, document(t, [trigger]))
    runs = await until(lambda: started(env, sid), 30, "the one-time run")
    assert datetime.fromisoformat(runs[0]["data"]["scheduled_at"]) == at

    async def once() -> bool:
        return await actions(env, sid) == 1

    await holds(once, 4, "a one-time schedule staying at one run")
    assert len(started(env, sid)) == 1
    await schedules.delete(env.client, sid)


def once(name: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "schedule",
        "name": name,
        "at": at.isoformat(),
        "input": {"at": {"$expr": "system.scheduled_at"}},
    }


def scheduled_times(env: Env, sid: str) -> list[tuple[datetime, int]]:
    return [
        (datetime.fromisoformat(e["data"]["scheduled_at"]), e["data"]["version"])
        for e in started(env, sid)
    ]


async def test_a_one_time_schedule_whose_time_passed_while_it_was_made_runs_once(
    env: Env,
) -> None:
    t = tenant()
    made, moved = schedule_id(t, "nightly", "made"), schedule_id(t, "nightly", "moved")
    # What a publish slower than its `at` does, without waiting for one: the publish
    # began before `at`, which passed before Temporal held the schedule.
    passed = (datetime.now(UTC) - timedelta(seconds=2)).replace(microsecond=0)
    later = passed + timedelta(hours=1)
    one = record(document(t, [once("made", passed), once("moved", later)]))
    report = await schedules.sync_definition(
        env.settings, env.client, [one], t, "nightly", catch_up_since=passed - timedelta(seconds=1)
    )
    assert sorted(report.created) == sorted([made, moved]) and report.caught_up == [made]

    # A new version moves the other one to a time that passed during its update.
    moved_to = (datetime.now(UTC) - timedelta(seconds=1)).replace(microsecond=0)
    two = record(document(t, [once("made", passed), once("moved", moved_to)], version=2))
    report = await schedules.sync_definition(
        env.settings,
        env.client,
        [one, two],
        t,
        "nightly",
        catch_up_since=moved_to - timedelta(seconds=1),
    )
    assert sorted(report.updated) == sorted([made, moved]) and report.caught_up == [moved]

    def both() -> bool:
        return bool(started(env, made)) and bool(started(env, moved))

    await until(both, 30, "the run of each one-time schedule")

    async def one_each() -> bool:
        return await actions(env, made) == 1 and await actions(env, moved) == 1

    await holds(one_each, 4, "each one-time schedule staying at one run")
    assert scheduled_times(env, made) == [(passed, 1)]
    assert scheduled_times(env, moved) == [(moved_to, 2)]

    # Restored after a hand delete (the reconciler asks for no catch-up): a time
    # already past is not run again.
    await env.client.get_schedule_handle(made).delete()
    report = await schedules.sync_definition(env.settings, env.client, [one, two], t, "nightly")
    assert report.created == [made] and report.caught_up == []

    async def none() -> bool:
        return await actions(env, made) == 0

    await holds(none, 3, "a restored one-time schedule whose time passed starting nothing")
    assert scheduled_times(env, made) == [(passed, 1)]
    for sid in (made, moved):
        await schedules.delete(env.client, sid)


async def test_a_new_version_replaces_the_schedule(env: Env) -> None:
    t = tenant()
    sid = schedule_id(t, "nightly", "tick")
    await publish(env, document(t, [every(2000)]))
    await until(lambda: started(env, sid), 30, "a run of version 1")
    body = await publish(env, document(t, [every(2000)], version=2, description="v2"))
    assert body["schedules"]["updated"] == [sid]
    replaced_at = datetime.now(UTC)
    described = json.loads((await cli(env, "schedules", "describe", sid, "--json")).stdout)
    assert described["version"] == 2

    def second() -> list[dict[str, Any]] | None:
        later = [
            e
            for e in started(env, sid)
            if datetime.fromisoformat(e["data"]["scheduled_at"])
            > replaced_at + timedelta(seconds=1)
        ]
        return later if len(later) >= 2 else None

    later = await until(second, 30, "two runs after the new version")
    assert {e["data"]["version"] for e in later} == {2}
    # A version that names the schedule no more takes it away.
    dropped = await publish(env, document(t, [], version=3))
    assert dropped["schedules"]["deleted"] == [sid]
    assert (await cli(env, "schedules", "describe", sid, "--json")).exit_code == 2


def _within(runs: list[dict[str, Any]], start: datetime, end: datetime) -> list[datetime]:
    times = [datetime.fromisoformat(e["data"]["scheduled_at"]) for e in runs]
    return sorted(t for t in times if start <= t <= end)


async def test_backfill_starts_the_window_under_the_overlap_policy(env: Env) -> None:
    t = tenant()
    sid = schedule_id(t, "nightly", "minutely")
    trigger = {"type": "schedule", "name": "minutely", "cron": "* * * * *", "overlap": "skip"}
    # Each run waits long enough to still be running when the next backfilled time comes.
    steps = [{"id": "hold", "type": "time.wait", "duration_ms": 30_000}]
    await publish(env, document(t, [trigger], steps=steps))
    base = (datetime.now(UTC) - timedelta(minutes=6)).replace(second=0, microsecond=0)
    # Two minute marks each: base+1m and base+2m, then base+3m and base+4m.
    skip_window = (base + timedelta(seconds=10), base + timedelta(minutes=2, seconds=10))
    all_window = (base + timedelta(minutes=2, seconds=20), base + timedelta(minutes=4, seconds=20))

    first = await cli(
        env,
        "schedules",
        "backfill",
        sid,
        "--from",
        skip_window[0].isoformat(),
        "--to",
        skip_window[1].isoformat(),
        "--by",
        "ops-ben",
        "--json",
    )
    assert first.exit_code == 0, first.stdout
    second = await cli(
        env,
        "schedules",
        "backfill",
        sid,
        "--from",
        all_window[0].isoformat(),
        "--to",
        all_window[1].isoformat(),
        "--overlap",
        "allow_all",
        "--by",
        "ops-ben",
        "--json",
    )
    assert second.exit_code == 0, second.stdout

    def both() -> bool:
        return len(_within(started(env, sid), *all_window)) == 2

    await until(both, 30, "both runs of the allow_all backfill")
    runs = started(env, sid)
    # skip: the first run of the window was still running when the second time came.
    assert _within(runs, *skip_window) == [base + timedelta(minutes=1)]
    assert _within(runs, *all_window) == [base + timedelta(minutes=3), base + timedelta(minutes=4)]
    await schedules.delete(env.client, sid)


async def test_the_reconciler_restores_a_deleted_schedule(env: Env) -> None:
    t = tenant()
    sid = schedule_id(t, "nightly", "hourly")
    trigger = {
        "type": "schedule",
        "name": "hourly",
        "cron": "0 * * * *",
        "timezone": "Europe/Paris",
    }
    await publish(env, document(t, [trigger]))
    # By hand, behind flowledger's back.
    await env.client.get_schedule_handle(sid).delete()
    gone = await cli(env, "schedules", "describe", sid, "--json")
    assert gone.exit_code == 2

    # The reconciler's own loop: its first round reconciles, and keeps the report.
    reconciler = Reconciler(env.settings, env.client)
    stop = asyncio.Event()
    running = asyncio.create_task(reconciler.run(stop))
    try:
        report = await until(lambda: reconciler.schedule_report, 60, "the reconcile at start")
    finally:
        stop.set()
        await running
        reconciler.close()
    assert sid in report.created
    restored = json.loads((await cli(env, "schedules", "describe", sid, "--json")).stdout)
    assert restored["version"] == 1 and restored["spec"]["cron"] == "0 * * * *"
    assert restored["next_run_at"] is not None
    again = await reconciler.reconcile_schedules()
    assert sid not in again.created + again.updated + again.deleted

    # An hourly schedule runs now only when asked.
    triggered = await cli(env, "schedules", "trigger", sid, "--by", "ops-cleo", "--json")
    assert triggered.exit_code == 0, triggered.stdout
    assert json.loads(triggered.stdout)["action"] == "ScheduleTriggered"
    runs = await until(lambda: started(env, sid), 30, "the triggered run")
    assert {e["data"]["version"] for e in runs} == {1}

    retired = await cli(env, "definitions", "retire", "nightly", "--tenant", t, "--json")
    assert retired.exit_code == 0, retired.stdout
    assert json.loads(retired.stdout)["schedules"]["deleted"] == [sid]

    with projector(env.settings):
        projected = await until(
            lambda: schedule_row(env, sid, state="deleted"), 60, "the schedule's row"
        )
    assert projected["tenant"] == t and projected["name"] == "hourly"
    assert projected["last_event_type"] == "ScheduleDeleted"
    why = await cli(env, "audit", "why", "workflow_schedules", sid, "--json")
    assert why.exit_code == 0, why.stdout
    chain = [link["type"] for link in json.loads(why.stdout)["chain"]]
    # publish created it, the reconciler restored it and looked at it, an operator
    # triggered it, retire deleted it
    assert chain == [
        "ScheduleUpserted",
        "ScheduleUpserted",
        "ScheduleObserved",
        "ScheduleTriggered",
        "ScheduleDeleted",
    ]
