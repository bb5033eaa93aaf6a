"""Partitioned routing on two processors (real processes): each holds only the waits
and early events of its routing partitions, and when one is SIGKILLed with waits open
and events held, the other takes its partitions (snapshot and tail) and every wait
still resumes exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowledger.settings import Settings
from flowledger.stack.processes import free_port
from processors.routing_key import wait_partition
from processors.status import lag as processor_lag
from processors.triggers import trigger_run_id, trigger_workflow_id
from tests.integration.runtime_support import component_env, keyed_event, send, stop_process
from tests.waiting import wait_for
from topics import admin, clients
from topics.catalogue import AUDIT, RUNTIME
from topics.reader import read_all
from workflows.definitions import store

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")
# Per routing partition: waits left open, and early events held, when one instance dies.
OPEN_PER_PARTITION = 6
HELD_PER_PARTITION = 3
SHARE_CEILING = 0.6


def definition(definition_id: str, tenant: str) -> dict[str, Any]:
    return {
        "id": definition_id,
        "version": 1,
        "tenant": tenant,
        "name": "partitioned job",
        "description": "started by job.requested, waits for its job.done",
        "payload_schema": {
            "type": "object",
            "required": ["job_id"],
            "properties": {"job_id": {"type": "string"}},
        },
        "trigger": {
            "type": "event",
            "event_type": "job.requested",
            "payload_mapping": {"job_id": {"$expr": "event.payload.job_id"}},
        },
        "steps": [
            {
                "id": "wait-done",
                "type": "event.wait",
                "event_type": "job.done",
                "correlation_key": {"$expr": "payload.job_id"},
                "assign": {"vars.done_event": {"$expr": "event.event_id"}},
            },
            {
                "id": "finish",
                "type": "control.return",
                "output": {"$expr": "{'done_event': vars.done_event}"},
            },
        ],
    }


def balanced_keys(tenant: str, partitions: int, per: int, prefix: str) -> list[str]:
    """Job ids whose job.requested and job.done fall `per` to each routing partition,
    so that an even split of the partitions is an even split of the state."""
    requested: Counter[int] = Counter()
    done: Counter[int] = Counter()
    chosen: list[str] = []
    n = 0
    while len(chosen) < per * partitions:
        key = f"{prefix}-{n:05d}"
        n += 1
        r = wait_partition(tenant, "job.requested", key, partitions)
        d = wait_partition(tenant, "job.done", key, partitions)
        if requested[r] < per and done[d] < per:
            requested[r] += 1
            done[d] += 1
            chosen.append(key)
    return chosen


@dataclass
class Instance:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics: str

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""


def scrape(url: str) -> dict[str, float]:
    """Each family's samples summed over their labels (None when not serving yet)."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    sums: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] += sample.value
    return dict(sums)


def try_scrape(url: str) -> dict[str, float] | None:
    try:
        return scrape(url)
    except OSError:
        return None


@pytest.fixture
def partitioned(settings: Settings) -> Settings:
    own = settings.model_copy(
        update={"processor": settings.processor.model_copy(update={"routing": "partitioned"})}
    )
    admin.ensure(own)
    return own


@pytest.fixture
def instances() -> Iterator[list[Instance]]:
    made: list[Instance] = []
    try:
        yield made
    finally:
        for instance in made:
            if instance.proc.poll() is None:
                stop_process(instance.proc)


def spawn(settings: Settings, logs: Path, name: str, args: list[str]) -> Instance:
    port = free_port()
    env = component_env(settings) | {
        "FLOWLEDGER_METRICS__PORT": str(port),
        # Snapshots while the test runs: the survivor adopts a snapshot and its tail.
        "FLOWLEDGER_PROCESSOR__SNAPSHOT_INTERVAL_S": "1",
    }
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [FLOWLEDGER, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )
    return Instance(name, proc, log, f"http://127.0.0.1:{port}/metrics")


def holding(settings: Settings, group: str) -> int:
    # Held while the future resolves: a client collected at once never answers.
    admin = clients.admin(settings)
    futures = admin.describe_consumer_groups([group], request_timeout=10)
    try:
        described = futures[group].result(timeout=15)
    except Exception:
        return 0
    # Members holding partitions (a member that just joined may hold none yet).
    return sum(1 for m in described.members if m.assignment.topic_partitions)


def runtime_events(settings: Settings) -> list[dict[str, Any]]:
    topic = settings.topic(RUNTIME)
    return [json.loads(r.value) for r in read_all(settings, topic) if r.value]


def test_two_instances_split_the_state_and_a_killed_ones_waits_resume_once(
    partitioned: Settings, tmp_path: Path, instances: list[Instance]
) -> None:
    settings = partitioned
    partitions = settings.kafka.events_partitions
    assert partitions % 2 == 0
    tenant = f"part-{uuid.uuid4().hex[:6]}"
    definition_id = f"partitioned-{uuid.uuid4().hex[:6]}"
    store.publish(settings, definition(definition_id, tenant))
    opened = balanced_keys(tenant, partitions, OPEN_PER_PARTITION, "open")
    early = balanced_keys(tenant, partitions, HELD_PER_PARTITION, "early")
    requested = {k: keyed_event(tenant, "job.requested", k, "job_id") for k in opened + early}
    done = {k: keyed_event(tenant, "job.done", k, "job_id") for k in opened + early}

    def run_id(key: str) -> str:
        event_id = str(requested[key].event_id)
        return trigger_run_id(trigger_workflow_id(tenant, definition_id, event_id))

    runs = {run_id(k): k for k in opened + early}
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = spawn(settings, logs, "worker", ["worker"])
    instances.append(worker)
    processors = [spawn(settings, logs, f"processor-{n}", ["processor"]) for n in (1, 2)]
    instances.extend(processors)

    def describe() -> str:
        return "\n".join(f"--- {i.name} ---\n{i.tail()}" for i in instances)

    def alive() -> None:
        for i in instances:
            if i.proc.poll() is not None and i.proc.returncode != -signal.SIGKILL:
                pytest.fail(f"{i.name} exited with {i.proc.returncode}:\n{i.tail()}")

    def settled(group: str) -> bool:
        alive()
        return holding(settings, group) == 2

    p = settings.processor
    wait_for(lambda: settled(p.group_id), 60, "both forwarders holding partitions", describe)
    wait_for(lambda: settled(p.routing_group_id), 60, "both routers holding partitions", describe)

    # The waits left open: their runs start and wait with a worker running.
    send(settings, [requested[k] for k in opened])
    last: list[Any] = []

    def gauge(name: str) -> float | None:
        alive()
        samples = [try_scrape(i.metrics) for i in processors]
        last[:] = samples
        if any(s is None for s in samples):
            return None
        return sum((s or {}).get(name, 0) for s in samples)

    def gauges() -> str:
        wanted = ("open_waits", "held_events", "records_total")
        found = [{k: v for k, v in (s or {}).items() if k.endswith(wanted)} for s in last]
        return f"scraped: {found}\n{describe()}"

    wait_for(
        lambda: gauge("flowledger_processor_open_waits") == len(opened), 90, "open waits", gauges
    )
    # The early ones start with no worker: their waits come only once a worker runs
    # again, so their job.done (after the run started: a wait may take it) is held.
    # A job.requested has a correlation key too: once its run is started it is held
    # as well, for a wait on job.requested that may come (none will).
    stop_process(worker.proc)
    instances.remove(worker)
    send(settings, [requested[k] for k in early])
    wait_for(
        lambda: gauge("flowledger_processor_held_events") == len(requested),
        90,
        "every run started",
        gauges,
    )
    send(settings, [done[k] for k in early])
    held_in_all = len(requested) + len(early)

    def split() -> list[dict[str, float]] | None:
        alive()
        samples = [try_scrape(i.metrics) for i in processors]
        last[:] = samples
        if any(s is None for s in samples):
            return None
        found = [s for s in samples if s is not None]
        waits = sum(s.get("flowledger_processor_open_waits", 0) for s in found)
        held = sum(s.get("flowledger_processor_held_events", 0) for s in found)
        return found if waits == len(opened) and held == held_in_all else None

    shares = wait_for(split, 90, "every wait open and every early event held", gauges)
    records = [
        sum(v for name, v in s.items() if name == "flowledger_processor_records_total")
        for s in shares
    ]
    for s, read in zip(shares, records, strict=True):
        waits = s["flowledger_processor_open_waits"]
        held = s["flowledger_processor_held_events"]
        assert 0 < waits <= SHARE_CEILING * len(opened), (waits, shares)
        assert 0 < held <= SHARE_CEILING * held_in_all, (held, shares)
        assert 0 < read <= SHARE_CEILING * sum(records), (records, shares)

    # One instance dies holding waits and early events; the rest of the work arrives.
    victim = processors[0]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(30)
    send(settings, [done[k] for k in opened])
    instances.append(spawn(settings, logs, "worker-2", ["worker"]))

    def finished() -> list[dict[str, Any]] | None:
        alive()
        events = runtime_events(settings)
        completed = {e["run_id"] for e in events if e["type"] == "RunCompleted"}
        return events if set(runs) <= completed else None

    def unfinished() -> str:
        events = runtime_events(settings)
        completed = {e["run_id"] for e in events if e["type"] == "RunCompleted"}
        waiting = {e["run_id"] for e in events if e["type"] == "WaitCreated"}
        left = {rid: runs[rid] for rid in runs if rid not in completed}
        states = {
            group: sum(1 for rid, k in left.items() if k.startswith(group) and rid in waiting)
            for group in ("open", "early")
        }
        return f"unfinished {len(left)} (of them waiting, by kind: {states})\n{gauges()}"

    events = wait_for(finished, 150, "every run to finish", unfinished)
    wait_for(
        lambda: processor_lag(settings)["total_lag"] == 0,
        60,
        "the survivor to commit both stages to their ends",
        describe,
    )

    by_run: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for event in events:
        by_run[event["run_id"]].setdefault(event["event_id"], event)
    assert set(by_run) == set(runs), "runs other than one per job.requested"
    for rid, key in runs.items():
        kinds = Counter(e["type"] for e in by_run[rid].values())
        assert kinds["WaitCreated"] == 1 and kinds["WaitResolved"] == 1, (rid, kinds)
        resolved = next(e["data"] for e in by_run[rid].values() if e["type"] == "WaitResolved")
        assert resolved["resolution"] == "RESOLVED", resolved
        assert resolved["matched_event_id"] == str(done[key].event_id), resolved
        completed = next(e["data"] for e in by_run[rid].values() if e["type"] == "RunCompleted")
        assert completed["status"] == "SUCCEEDED", completed

    # Each job.done went to its own run and no other, whoever routed it.
    owner = {str(done[k].event_id): rid for rid, k in runs.items()}
    delivered: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for audit in (json.loads(r.value) for r in read_all(settings, settings.topic(AUDIT))):
        if audit["event_id"] in owner:
            assert audit["error_code"] is None, audit
            delivered[audit["event_id"]] |= {(d["run_id"], d["kind"]) for d in audit["deliveries"]}
    assert delivered == {e: {(rid, "signal")} for e, rid in owner.items()}

    survivor = scrape(processors[1].metrics)
    assert survivor["flowledger_processor_open_waits"] == 0
    # Every job.done went to its wait; what is still held is every job.requested.
    assert survivor["flowledger_processor_held_events"] == len(requested)
