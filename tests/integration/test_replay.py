"""Replay and audit against real Kafka: a rebuild equals the live tables after a
mixed workload with duplicates and a killed projector; verify names a hand-edited
row; swap refuses an unverified shadow; as-of shows a run mid-way; timeline and why
explain rows from the log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from flowledger.cli import _register, app
from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from projections import db
from projections.codes import REBUILD_HELPER_FAILED
from projections.projector import Projector, topic_kinds
from projections.replay.cut import from_checkpoints
from projections.replay.helpers import helper_count
from projections.replay.rebuild import rebuild
from projections.replay.verify import compare
from projections.synthetic import Generated, stream
from schemas.runtime import RUNTIME_EVENT_ADAPTER, runtime_event_id
from tests.waiting import wait_for
from topics import clients
from topics.catalogue import RUNTIME
from workflows.actions.ledger import ActionLedger, LedgerKey, ledger_engine

_register()
FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")


def cli(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), obj={"settings": settings}, catch_exceptions=False)


def produce(settings: Settings, records: list[Generated]) -> list[tuple[int, int]]:
    producer = clients.producer(settings)
    where: list[tuple[int, int]] = []

    def done(err: Any, msg: Any) -> None:
        assert err is None
        where.append((msg.partition(), msg.offset()))

    for item in records:
        producer.produce(
            settings.topic(item.base), key=item.key, value=item.value, on_delivery=done
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    return where


def project_until_idle(settings: Settings) -> None:
    stats = Projector(settings, group_id=f"p-{uuid.uuid4().hex[:6]}").run_until_idle(120)
    assert stats.caught_up


def checkpointed(settings: Settings) -> int:
    engine = db.engine(settings.database_url())
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("select coalesce(sum(next_offset), 0) from projection_checkpoints")
                ).scalar()
                or 0
            )
    except Exception:
        return 0
    finally:
        engine.dispose()


def kill_a_projector_midway(settings: Settings, total: int) -> None:
    env = {
        **os.environ,
        "FLOWLEDGER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "FLOWLEDGER_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "FLOWLEDGER_DATABASE__URL": settings.database_url(),
        "FLOWLEDGER_PROJECTOR__BATCH_SIZE": "100",
        "FLOWLEDGER_PROJECTOR__GROUP_ID": f"killed-{uuid.uuid4().hex[:6]}",
    }
    proc = subprocess.Popen(
        [FLOWLEDGER, "projector"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def applied_a_third() -> bool:
            assert proc.poll() is None, "the projector exited by itself"
            return checkpointed(settings) >= total // 3

        wait_for(applied_a_third, 60, "the projector to apply a third of the records")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def test_rebuild_verify_swap_after_duplicates_and_a_kill(settings: Settings) -> None:
    records = list(stream(runs=300, seed=21, audits=120, definitions=4))
    produce(settings, records)
    kill_a_projector_midway(settings, len(records))
    # Redeliveries: a slice of the log published again.
    produce(settings, records[100:400])
    project_until_idle(settings)
    # The action ledger is no projection: verify ignores it and swap keeps it.
    ledger = ActionLedger(ledger_engine(settings.database_url()), lease_ms=30_000)
    kept = LedgerKey("acme", "core.noop", 1, "order-1")
    assert ledger.claim(kept, "h", "run-1", "root.steps[0]", 1).held
    ledger.record(kept, "h", {"value": 1})

    verified = cli(settings, "replay", "verify", "--shadow", "--json")
    assert verified.exit_code == 0, verified.stdout
    document = json.loads(verified.stdout)
    assert document["identical"] is True and document["differences"] == []
    assert document["events"] == len(records) + 300

    live = db.engine(settings.database_url())
    try:
        with live.begin() as conn:
            run_id = conn.execute(text("select run_id from workflow_runs order by run_id")).scalar()
            conn.execute(
                text("update workflow_runs set status = 'FAILED' where run_id = :r"), {"r": run_id}
            )
    finally:
        live.dispose()
    broken = cli(settings, "replay", "verify", "--shadow", "--json")
    assert broken.exit_code == 1
    differences = json.loads(broken.stdout)["differences"]
    assert {
        "table": "workflow_runs",
        "key": {"run_id": run_id},
        "column": "status",
    }.items() <= differences[0].items()

    refused = cli(settings, "replay", "swap", "--json")
    assert refused.exit_code == 2
    assert json.loads(refused.stdout)["error"]["code"] == "REPLAY_SWAP_REFUSED"

    forced = cli(settings, "replay", "swap", "--force", "--json")
    assert forced.exit_code == 0, forced.stdout
    assert json.loads(forced.stdout)["forced"] is True
    again = cli(settings, "replay", "verify", "--shadow", "--json")
    assert again.exit_code == 0, again.stdout
    assert json.loads(again.stdout)["identical"] is True
    swapped = cli(settings, "replay", "swap", "--json")
    assert swapped.exit_code == 0 and json.loads(swapped.stdout)["forced"] is False
    assert ledger.claim(kept, "h2", "run-2", "root.steps[0]", 1).output == {"value": 1}
    ledger.close()


def one_run(run_id: str) -> list[Generated]:
    events = []
    kinds = [
        ("RunStarted", {"definition_id": "d", "version": 1, "definition_hash": "0" * 64}),
        ("StepStarted", {"step_path": "root.steps[0]", "step_type": "event.wait"}),
        (
            "WaitCreated",
            {
                "wait_id": "w1",
                "wait_type": "event",
                "step_path": "root.steps[0]",
                "event_type": "go",
                "correlation_key": "k",
            },
        ),
        ("WaitResolved", {"wait_id": "w1", "resolution": "RESOLVED", "matched_event_id": "e"}),
        (
            "StepCompleted",
            {"step_path": "root.steps[0]", "step_type": "event.wait", "status": "SUCCEEDED"},
        ),
        ("RunCompleted", {"status": "SUCCEEDED", "output": 1}),
    ]
    for seq, (kind, data) in enumerate(kinds, start=1):
        event = RUNTIME_EVENT_ADAPTER.validate_python(
            {
                "event_id": str(runtime_event_id(run_id, seq)),
                "run_id": run_id,
                "tenant": "acme",
                "seq": seq,
                "occurred_at": datetime.now(UTC).isoformat(),
                "type": kind,
                "data": data,
            }
        )
        events.append(Generated(RUNTIME, run_id.encode(), RUNTIME_EVENT_ADAPTER.dump_json(event)))
    return events


def test_as_of_an_offset_mid_run_shows_it_waiting(settings: Settings, tmp_path: Path) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    where = produce(settings, one_run(run_id))
    partition = where[0][0]
    wait_created_offset = where[2][1]
    spec = f"runtime:{partition}={wait_created_offset + 1}"
    url = f"sqlite:///{tmp_path / 'as-of.db'}"
    result = cli(settings, "replay", "as-of", "--offsets", spec, "--into", url, "--json")
    assert result.exit_code == 0, result.stdout
    engine = db.engine(url)
    try:
        with engine.connect() as conn:
            status = conn.execute(
                text("select status from workflow_runs where run_id = :r"), {"r": run_id}
            ).scalar()
    finally:
        engine.dispose()
    assert status == "WAITING"

    project_until_idle(settings)
    timeline = json.loads(cli(settings, "replay", "timeline", run_id, "--json").stdout)
    assert [e["seq"] for e in timeline["events"]] == [1, 2, 3, 4, 5, 6]
    assert all(e["partition"] == partition for e in timeline["events"])
    why = json.loads(
        cli(settings, "audit", "why", "workflow_run_waits", f"{run_id}|w1", "--json").stdout
    )
    assert [c["type"] for c in why["chain"]] == ["RunStarted", "WaitCreated", "WaitResolved"]
    assert why["last_changed_by"]["offset"] == where[3][1]


async def test_router_dry_run_reports_changed_routing(settings: Settings, tmp_path: Path) -> None:
    import asyncio

    from tests.integration.runtime_support import definition, start, wait_for_events, worker

    steps = [
        {"id": "w", "type": "event.wait", "event_type": "ticket.updated", "correlation_key": "T-5"}
    ]
    before = datetime.now(UTC)
    async with worker(settings) as client:
        run_id, _handle = await start(settings, client, definition(steps))
        await wait_for_events(settings, run_id, "WaitCreated")
        event = {
            "event_id": str(uuid.uuid4()),
            "event_type": "ticket.updated",
            "tenant": "acme",
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": {"ticketId": "T-5"},
        }
        await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["publish", "-", "--json"],
            json.dumps(event),
            obj={"settings": settings},
        )
        paths = tmp_path / "paths.json"
        paths.write_text(json.dumps({"ticket.updated": "ticketId"}), encoding="utf-8")
        window = [
            "--from",
            before.isoformat(),
            "--to",
            (datetime.now(UTC).replace(year=2100)).isoformat(),
        ]
        plain = await asyncio.to_thread(cli, settings, "replay", "router", *window, "--json")
        changed = await asyncio.to_thread(
            cli, settings, "replay", "router", *window, "--paths", str(paths), "--json"
        )
    today = json.loads(plain.stdout)
    assert today["events"] == 1 and today["changed"] == 0
    assert today["outcomes"][0]["correlation"]["source"] == "missing"
    tomorrow = json.loads(changed.stdout)
    assert tomorrow["changed"] == 1
    outcome = tomorrow["outcomes"][0]
    assert outcome["correlation"]["key"] == "T-5"
    assert outcome["would_wake"] == [{"run_id": run_id, "wait_id": f"{run_id}:root.steps[0]"}]
    assert outcome["did_wake"] == []


def a_helper_that_breaks() -> None:
    raise RuntimeError("this helper cannot start")


def test_a_rebuild_in_helper_processes_equals_one_in_a_single_process(
    settings: Settings, tmp_path: Path
) -> None:
    produce(settings, list(stream(runs=400, seed=5, audits=60, definitions=3)))
    project_until_idle(settings)
    live = db.engine(settings.database_url())
    try:
        cut = from_checkpoints(settings, live)
        kinds = topic_kinds(settings)
        for processes in (1, 3):
            tuned = settings.model_copy(
                update={
                    "projector": settings.projector.model_copy(
                        update={"rebuild_processes": processes}
                    )
                }
            )
            target = db.engine(f"sqlite:///{tmp_path / f'rebuilt-{processes}.db'}")
            try:
                runtime = [s for s in cut if kinds[s[0]] == "runtime"]
                assert helper_count(tuned, target, len(runtime)) == processes - 1
                stats = rebuild(tuned, target, cut)
                assert stats.events == sum(cut.values())
                assert compare(live, target) == []
            finally:
                target.dispose()

        broken = db.engine(f"sqlite:///{tmp_path / 'broken.db'}")
        try:
            with pytest.raises(FlowledgerError) as failed:
                rebuild(settings, broken, cut, helper_setup=a_helper_that_breaks)
            assert failed.value.code == REBUILD_HELPER_FAILED
            assert "this helper cannot start" in str(failed.value)
        finally:
            broken.dispose()
    finally:
        live.dispose()
