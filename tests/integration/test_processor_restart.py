"""The processor at scale on the real stack: a restart reads the snapshot of the live
routing state and the tail after it, not the history; and two instances, one
SIGKILLed while events are held in the early-event window and waits are open, still
resume every wait exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks import _history
from benchmarks._history import open_wait_records, produce
from flowledger.settings import Settings
from processors import audit as audit_records
from processors.horizon import HorizonSet
from processors.router_index import RouterIndex
from processors.snapshot import FollowerState
from processors.snapshot_store import SnapshotStore
from tests.integration.runtime_support import (
    REPO,
    component_env,
    processing,
    stop_process,
    worker,
)
from tests.integration.test_processor import (
    envelope,
    result,
    runtime,
    send,
    start_waiting,
    wait_created,
    waiting,
)
from tests.waiting import until
from topics import clients
from topics.catalogue import AUDIT, RUNTIME
from topics.reader import read_all
from topics.serde import decode_runtime
from topics.watermarks import high_watermark
from workflows.client import connect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HISTORY = 1_000_000
OPEN_WAITS = 10_000
# A generous ceiling, not a timing target (benchmarks/processor_restart.py measures):
# folding a million records takes about 18 s on an idle machine, the snapshot 1-2 s.
READY_CEILING_S = 12.0
FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = clients.consumer(settings, "ends-probe")
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {p: high_watermark(consumer, topic, p, 10) for p in meta.partitions}
    finally:
        consumer.close()


def _the_state_the_history_leaves(settings: Settings, at: str) -> FollowerState:
    """What folding the synthetic history leaves: its open waits (its closed runs are
    past the de-duplication horizon), as of the runtime topic's end."""
    horizon = settings.processor.dedup_horizon
    index = RouterIndex(horizon=horizon)
    for _key, value in open_wait_records(OPEN_WAITS, at):
        index.apply(decode_runtime(value))
    positions = {settings.topic(RUNTIME): _ends(settings, settings.topic(RUNTIME))}
    return FollowerState(index, HorizonSet(horizon), {}, positions)


async def _until_ready(runner: object) -> None:
    await until(
        lambda: runner.readiness()["caught_up"] and 0 in runner._assigned,  # type: ignore[attr-defined]
        90,
        "processor ready with partition 0",
    )


async def test_restart_after_a_million_history_records_is_ready_within_the_bound(
    settings: Settings,
) -> None:
    # The one snapshot of replicated routing; partitioned routing's restart (a snapshot
    # per routing partition) is benchmarks/processor_restart.py --routing partitioned.
    settings = settings.model_copy(
        update={"processor": settings.processor.model_copy(update={"routing": "replicated"})}
    )
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    produced = await asyncio.to_thread(produce, settings, HISTORY, OPEN_WAITS)
    assert produced >= HISTORY - 3
    # Set up fast: the snapshot a processor that folded this history would have written.
    store = SnapshotStore(settings)
    await asyncio.to_thread(store.save, _the_state_the_history_leaves(settings, at))
    store.close()

    async with processing(settings) as runner:
        await _until_ready(runner)
    stats = runner.stats
    assert stats.ready_seconds < READY_CEILING_S, stats.startup
    assert stats.startup["tail_records"] == 0, stats.startup
    assert stats.startup["open_waits"] == OPEN_WAITS
    # Its clean stop wrote a snapshot of its own.
    assert stats.snapshots == 1

    # One more wait after that snapshot: the next start reads it and nothing else.
    run_id = str(uuid.uuid4())
    extra = _history.wait_created(run_id, 1, at, str(uuid.uuid4()), "extra-0")
    producer = clients.producer(settings)
    producer.produce(settings.topic(RUNTIME), key=run_id.encode(), value=extra)
    assert producer.flush(10) == 0
    async with processing(settings) as again:
        await _until_ready(again)
        assert again.follower.index.matching("bench", "bench.go", "extra-0")
    assert again.stats.startup["tail_records"] == 1, again.stats.startup
    assert again.stats.startup["open_waits"] == OPEN_WAITS + 1
    assert again.stats.ready_seconds < READY_CEILING_S


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [FLOWLEDGER, "processor"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )


def _held(settings: Settings, event_ids: set[str]) -> set[str]:
    found = set()
    for r in read_all(settings, settings.topic(AUDIT)):
        if audit_records.is_held(r.headers):
            event_id = json.loads(r.value)["event_id"]
            if event_id in event_ids:
                found.add(event_id)
    return found


async def test_two_instances_one_killed_while_events_are_held_every_wait_resumes_once(
    settings: Settings, tmp_path: Path
) -> None:
    document = waiting()
    log = tmp_path / "processors.log"
    # Snapshots every second, so the restarted instance starts from one and its tail.
    env = {**component_env(settings), "FLOWLEDGER_PROCESSOR__SNAPSHOT_INTERVAL_S": "1"}
    procs = [_spawn(env, log), _spawn(env, log)]
    try:
        async with worker(settings) as client:
            open_runs = await asyncio.gather(
                *(start_waiting(settings, client, document, f"open-{n}") for n in range(8))
            )
            await until(lambda: wait_created(settings, set(open_runs)), 90, "open waits")
        # No worker now: these runs are started, but their waits are registered only
        # once a worker runs again, so their events are held meanwhile.
        client = await connect(settings)
        held_runs = await asyncio.gather(
            *(start_waiting(settings, client, document, f"held-{n}") for n in range(8))
        )
        early = {run: envelope(key=f"held-{n}") for n, run in enumerate(held_runs)}
        await asyncio.to_thread(send, settings, *early.values())
        ids = {str(e.event_id) for e in early.values()}
        await until(lambda: _held(settings, ids) == ids, 90, "events held")

        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        procs.append(_spawn(env, log))

        late = {run: envelope(key=f"open-{n}") for n, run in enumerate(open_runs)}
        await asyncio.to_thread(send, settings, *late.values())
        async with worker(settings) as client:
            expected = {**early, **late}
            outputs = await asyncio.gather(*(result(client, r, 120) for r in expected))
        assert outputs == [str(e.event_id) for e in expected.values()]
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_process(proc, 20)
    runs = set(open_runs) | set(held_runs)
    resolved = Counter(
        e["run_id"]
        for e in runtime(settings)
        if e["type"] == "WaitResolved" and e["run_id"] in runs
    )
    assert {run: resolved[run] for run in runs} == {run: 1 for run in runs}


def test_internal_topics_are_ensured_and_described_with_their_configs(settings: Settings) -> None:
    from typer.testing import CliRunner

    from flowledger.cli import _register, app
    from topics.catalogue import INTERNAL_PREFIX, ROUTING, SNAPSHOTS, WAITS

    _register()
    described = CliRunner().invoke(
        app, ["topics", "describe", "--json"], obj={"settings": settings}, catch_exceptions=False
    )
    assert described.exit_code == 0
    internal = [t for t in json.loads(described.stdout) if INTERNAL_PREFIX in t["name"]]
    by_name = {t["name"]: t for t in internal}
    assert set(by_name) == {
        settings.topic(SNAPSHOTS),
        settings.topic(ROUTING),
        settings.topic(WAITS),
    }
    snapshots, routing = by_name[settings.topic(SNAPSHOTS)], by_name[settings.topic(ROUTING)]
    waits = by_name[settings.topic(WAITS)]
    for topic in (snapshots, routing, waits):
        assert topic["status"] == "exists"
        assert topic["partitions"] == settings.kafka.events_partitions
    assert snapshots["config"]["cleanup.policy"] == "compact"
    assert waits["config"]["cleanup.policy"] == "compact"
    assert routing["config"]["cleanup.policy"] == "delete"
