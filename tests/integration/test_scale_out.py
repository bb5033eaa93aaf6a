"""Scale-out on one machine: 2 processors, 2 workers and 2 projectors (real processes)
share 6-partition topics; one of each is SIGKILLed mid-run. Every triggered run still
finishes, once, with the expected projections, no run takes the same event twice, and
the projection equals a rebuild from the log."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from flowledger.settings import Settings
from processors import audit as audit_records
from processors.status import lag as processor_lag
from processors.triggers import trigger_run_id, trigger_workflow_id
from projections import db, migrate
from projections import lag as projection_lag
from projections import tables as t
from schemas.envelope import EventEnvelope
from tests.integration.runtime_support import SESSION_TIMEOUT_S, component_env, keyed_event, send
from tests.waiting import wait_for as wait_until
from topics import clients
from topics.catalogue import AUDIT, RUNTIME
from topics.reader import read_all
from workflows.client import connect
from workflows.definitions import store

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")
TENANT = "acme"
JOBS = 150
# Every DUP_EVERY-th job gets its job.requested and its job.done published twice.
DUP_EVERY = 5
CHUNK = 15  # job.requested events published per turn of the driving loop
# The broker's group.min.session.timeout.ms: the shortest a group member may have.
SESSION_TIMEOUT_MS = SESSION_TIMEOUT_S * 1000
START_TIMEOUT_S = 60.0
# A worker killed inside an action leaves it to its 60 s start-to-close timeout.
RUNS_TIMEOUT_S = 150.0


def job_definition(definition_id: str) -> dict[str, Any]:
    """Started by job.requested; a little work, then it waits for its job.done."""
    return {
        "id": definition_id,
        "version": 1,
        "tenant": TENANT,
        "name": "scale-out job",
        "description": "assign, a noop action, wait for job.done, return its event id",
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
                "id": "prepare",
                "type": "assign",
                "assign": {"vars.label": {"$expr": "'job ' & payload.job_id"}},
            },
            {
                "id": "work",
                "type": "action.call",
                "action": "core.noop",
                "version": 1,
                "input": {"value": {"$expr": "vars.label"}},
                # No authored retry: an attempt lost with a killed worker is run
                # again by the runtime, not counted as a failure of the action.
                "save_as": "vars.work",
            },
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
                "output": {"$expr": "{'job_id': payload.job_id, 'done_event': vars.done_event}"},
            },
        ],
    }


# -- the processes -------------------------------------------------------------------


@dataclass
class Component:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes]
    killed: bool = False

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Fleet:
    members: list[Component] = field(default_factory=list)

    def of(self, kind: str) -> list[Component]:
        return [c for c in self.members if c.name.startswith(kind)]

    def check_alive(self) -> None:
        for c in self.members:
            if not c.killed and c.proc.poll() is not None:
                pytest.fail(f"{c.name} exited with {c.proc.returncode}:\n{c.tail()}", pytrace=False)

    def diagnostics(self) -> str:
        return "\n".join(f"--- {c.name} ({c.log}) ---\n{c.tail(15)}" for c in self.members)

    def kill(self, component: Component) -> None:
        component.proc.send_signal(signal.SIGKILL)
        component.proc.wait(30)
        component.killed = True

    def stop(self, kind: str | None = None) -> None:
        """SIGTERM (a clean stop), then SIGKILL whatever does not exit in time."""
        chosen = [c for c in self.members if kind is None or c.name.startswith(kind)]
        for c in chosen:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for c in chosen:
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait(10)


def spawn(fleet: Fleet, settings: Settings, logs: Path, name: str, args: list[str]) -> None:
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [FLOWLEDGER, *args],
            env=component_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    fleet.members.append(Component(name, args, log, proc))


def group_members(settings: Settings, group: str) -> int:
    admin = clients.admin(settings)
    futures = admin.describe_consumer_groups([group], request_timeout=10)
    try:
        described = futures[group].result(timeout=15)
    except Exception:
        return 0
    return len(described.members)


def worker_pids_polling(settings: Settings) -> set[int]:
    """Pids of the workers that have polled the test's workflow task queue."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    async def pollers() -> set[int]:
        client = await connect(settings)
        found: set[int] = set()
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            reply = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=settings.temporal.namespace,
                    task_queue=TaskQueue(name=settings.temporal.task_queue),
                    task_queue_type=kind,
                )
            )
            # The SDK's default identity is "<pid>@<host>".
            pids = {
                int(p.identity.split("@", 1)[0])
                for p in reply.pollers
                if p.identity.split("@", 1)[0].isdigit()
            }
            found = pids if kind == TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW else found & pids
        return found

    return asyncio.run(pollers())


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, fleet: Fleet | None = None
) -> Any:
    """The shared wait, also failing at once when a component died."""

    def check() -> Any:
        if fleet is not None:
            fleet.check_alive()
        return condition()

    return wait_until(check, timeout, what, fleet.diagnostics if fleet is not None else None)


# -- reading the projection and the log ------------------------------------------------


def table_rows(engine: Engine, table: Any) -> list[dict[str, Any]]:
    with db.read_connection(engine) as conn:
        return [dict(row._mapping) for row in conn.execute(select(table))]


def log_values(settings: Settings, base: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in read_all(settings, settings.topic(base)) if r.value]


@dataclass
class Jobs:
    definition_id: str
    ids: list[str]
    requested: dict[str, EventEnvelope]
    done: dict[str, EventEnvelope]
    duplicated: set[str]

    @classmethod
    def make(cls, definition_id: str, count: int) -> Jobs:
        ids = [f"job-{n:04d}" for n in range(count)]
        return cls(
            definition_id,
            ids,
            {j: keyed_event(TENANT, "job.requested", j, "job_id") for j in ids},
            {j: keyed_event(TENANT, "job.done", j, "job_id") for j in ids},
            set(ids[::DUP_EVERY]),
        )

    def run_id(self, job: str) -> str:
        wid = trigger_workflow_id(TENANT, self.definition_id, str(self.requested[job].event_id))
        return trigger_run_id(wid)

    def runs(self) -> dict[str, str]:
        return {self.run_id(j): j for j in self.ids}


# -- the test --------------------------------------------------------------------------


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    made = Fleet()
    try:
        yield made
    finally:
        made.stop()


def start_fleet(fleet: Fleet, settings: Settings, logs: Path) -> None:
    for n in (1, 2):
        spawn(fleet, settings, logs, f"worker-{n}", ["worker"])
        spawn(fleet, settings, logs, f"processor-{n}", ["processor"])
        spawn(
            fleet,
            settings,
            logs,
            f"projector-{n}",
            ["projector", "--session-timeout-ms", str(SESSION_TIMEOUT_MS)],
        )
    worker_pids = {c.proc.pid for c in fleet.of("worker")}
    wait_for(
        lambda: worker_pids <= worker_pids_polling(settings),
        START_TIMEOUT_S,
        "both workers to poll the task queue",
        fleet,
    )
    wait_for(
        lambda: group_members(settings, settings.processor.group_id) == 2,
        START_TIMEOUT_S,
        "both processors to join their consumer group",
        fleet,
    )
    wait_for(
        lambda: group_members(settings, settings.projector.group_id) == 2,
        START_TIMEOUT_S,
        "both projectors to join their consumer group",
        fleet,
    )


def drive(settings: Settings, engine: Engine, fleet: Fleet, jobs: Jobs) -> dict[str, float]:
    """Publish the jobs at a steady pace, answer every wait that opens with its
    job.done, kill one of each component once a third of the runs exist, and return
    once every run is SUCCEEDED in the projection."""
    begun = time.monotonic()
    to_request = list(jobs.ids)
    answered: set[str] = set()
    later: list[EventEnvelope] = []  # duplicates go out one turn after the originals
    last_chunk = 0.0
    marks: dict[str, float] = {}

    def turn() -> dict[str, float] | None:
        nonlocal to_request, later, last_chunk
        fleet.check_alive()
        now = time.monotonic()
        batch, later = later, []
        if to_request and now - last_chunk >= 1.0:
            chunk, to_request = to_request[:CHUNK], to_request[CHUNK:]
            batch += [jobs.requested[j] for j in chunk]
            later += [jobs.requested[j] for j in chunk if j in jobs.duplicated]
            last_chunk = now
        waits = table_rows(engine, t.workflow_run_waits)
        runs = table_rows(engine, t.workflow_runs)
        opened = sorted({w["correlation_key"] for w in waits if w["status"] == "OPEN"} - answered)
        batch += [jobs.done[j] for j in opened]
        later += [jobs.done[j] for j in opened if j in jobs.duplicated]
        answered.update(opened)
        send(settings, batch)
        if "killed" not in marks and len(runs) >= len(jobs.ids) // 3:
            for kind in ("worker", "processor", "projector"):
                fleet.kill(fleet.of(kind)[0])
            marks["killed"] = time.monotonic() - begun
            marks["runs_at_kill"] = len(runs)
            marks["succeeded_at_kill"] = sum(r["status"] == "SUCCEEDED" for r in runs)
        failed = [r for r in runs if r["status"] in ("FAILED", "CANCELED")]
        if failed:
            pytest.fail(f"runs ended badly, marks {marks}: {failed[:3]}", pytrace=False)
        succeeded = sum(r["status"] == "SUCCEEDED" for r in runs)
        progress.update(runs=len(runs), statuses=dict(Counter(r["status"] for r in runs)))
        if not to_request and not later and succeeded >= len(jobs.ids):
            marks["all_succeeded"] = time.monotonic() - begun
            return marks
        return None

    progress: dict[str, Any] = {}
    done: dict[str, float] = wait_until(
        turn,
        RUNS_TIMEOUT_S,
        "every run to succeed",
        lambda: f"{progress}, {len(answered)} answered, marks {marks}\n{fleet.diagnostics()}",
    )
    return done


def test_two_of_each_one_of_each_killed_every_run_finishes_once(
    settings: Settings, tmp_path: Path, fleet: Fleet
) -> None:
    assert settings.kafka.events_partitions == 6 and settings.kafka.partitions == 6
    jobs = Jobs.make(f"scale-{uuid.uuid4().hex[:6]}", JOBS)
    store.publish(settings, job_definition(jobs.definition_id))
    engine = db.engine(settings.database_url())
    try:
        # Two projectors starting together would both migrate the empty database.
        migrate.upgrade(engine)
        logs = tmp_path / "logs"
        logs.mkdir()
        start_fleet(fleet, settings, logs)
        marks = drive(settings, engine, fleet, jobs)
        print(f"scale-out timeline (s since the first job): {marks}")
        assert marks["succeeded_at_kill"] < len(jobs.ids), "killed after the work was done"

        # Every ingress record handled (the survivors took the dead one's partitions),
        # then nothing but the projectors left running, caught up with the log.
        wait_for(
            lambda: processor_lag(settings)["total_lag"] == 0,
            60,
            "the processors to commit every ingress record",
            fleet,
        )
        fleet.stop("processor")
        fleet.stop("worker")
        assert projection_lag.wait_caught_up(settings, engine, timeout=60), fleet.diagnostics()
        fleet.stop("projector")

        check_runtime_log(settings, jobs)
        check_audit_log(settings, jobs)
        check_projection(engine, jobs)
    finally:
        engine.dispose()
    verified = subprocess.run(
        [FLOWLEDGER, "replay", "verify", "--shadow", "--json"],
        env=component_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    document = json.loads(verified.stdout)
    assert document["identical"] is True and document["differences"] == []


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if not k.endswith("_at")}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def check_runtime_log(settings: Settings, jobs: Jobs) -> None:
    """Per run: one copy of each seq 1..n (a re-emission after a kill is the same event),
    one RunStarted, one RESOLVED wait naming its job.done, one SUCCEEDED."""
    runs = jobs.runs()
    by_run: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for event in log_values(settings, RUNTIME):
        seen = by_run[event["run_id"]].setdefault(event["event_id"], event)
        # A copy re-emitted after a kill is the same event; only times taken from the
        # workflow clock may differ, when the first copy's workflow task never
        # completed and a new worker ran that task afresh. Consumers keep the first.
        assert _timeless(seen) == _timeless(event), (
            f"two different records share the event id {event['event_id']}"
        )
    assert set(by_run) == set(runs), "runs other than one per job.requested"
    for run_id, job in runs.items():
        events = sorted(by_run[run_id].values(), key=lambda e: e["seq"])
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), run_id
        kinds = Counter(e["type"] for e in events)
        assert kinds["RunStarted"] == 1 and kinds["RunCompleted"] == 1, (run_id, kinds)
        assert kinds["WaitCreated"] == 1 and kinds["WaitResolved"] == 1, (run_id, kinds)
        resolved = next(e["data"] for e in events if e["type"] == "WaitResolved")
        assert resolved["resolution"] == "RESOLVED"
        assert resolved["matched_event_id"] == str(jobs.done[job].event_id)
        finished = next(e["data"] for e in events if e["type"] == "RunCompleted")
        assert finished["status"] == "SUCCEEDED", (run_id, finished)


def check_audit_log(settings: Settings, jobs: Jobs) -> None:
    """Each job.requested started (or found) only its own run; each job.done was
    routed only to its own run."""
    runs = jobs.runs()
    owner = {str(jobs.requested[j].event_id): run_id for run_id, j in runs.items()}
    owner.update({str(jobs.done[j].event_id): run_id for run_id, j in runs.items()})
    kinds = {str(e.event_id): "start" for e in jobs.requested.values()}
    kinds.update({str(e.event_id): "signal" for e in jobs.done.values()})
    audited: Counter[str] = Counter()
    for record in read_all(settings, settings.topic(AUDIT)):
        audit = json.loads(record.value)
        if audit_records.is_held(record.headers) and not audit["deliveries"]:
            # An event that overtook its wait's registration is audited as held first
            # (no delivery yet), then again once delivered: that second record counts.
            continue
        event_id = audit["event_id"]
        assert event_id in owner, audit
        assert audit["error_code"] is None, audit
        audited[event_id] += 1
        targets = {(d["run_id"], d["kind"]) for d in audit["deliveries"]}
        assert targets == {(owner[event_id], kinds[event_id])}, audit
    assert set(audited) == set(owner), "some ingress events were never audited"


def check_projection(engine: Engine, jobs: Jobs) -> None:
    runs = jobs.runs()
    rows = {r["run_id"]: r for r in table_rows(engine, t.workflow_runs)}
    assert set(rows) == set(runs)
    for run_id, job in runs.items():
        row = rows[run_id]
        assert row["status"] == "SUCCEEDED", row
        assert row["definition_id"] == jobs.definition_id
        assert row["input"] == {"job_id": job}
        assert row["output"] == {"job_id": job, "done_event": str(jobs.done[job].event_id)}
    waits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for wait in table_rows(engine, t.workflow_run_waits):
        waits[wait["run_id"]].append(wait)
    assert set(waits) == set(runs)
    for run_id, job in runs.items():
        assert len(waits[run_id]) == 1, waits[run_id]
        (wait,) = waits[run_id]
        assert wait["status"] == "RESOLVED" and wait["correlation_key"] == job, wait
        assert wait["matched_event_id"] == str(jobs.done[job].event_id), wait
    steps: dict[str, set[str]] = defaultdict(set)
    for step in table_rows(engine, t.workflow_run_steps):
        assert step["status"] == "SUCCEEDED", step
        steps[step["run_id"]].add(step["step_id"])
    assert all(steps[r] == {"prepare", "work", "wait-done", "finish"} for r in runs), steps
    invoked: dict[str, list[str]] = defaultdict(list)
    attempts = sorted(table_rows(engine, t.workflow_action_invocations), key=lambda a: a["seq"])
    for invocation in attempts:
        invoked[invocation["run_id"]].append(invocation["status"])
    # One noop per run; a worker killed inside it may have left a timed-out attempt.
    assert all(invoked[r] and invoked[r][-1] == "SUCCEEDED" for r in runs), invoked
    audits = table_rows(engine, t.workflow_runtime_events)
    assert len(audits) == 2 * len(jobs.ids)
    assert {a["event_id"] for a in audits} == {
        str(e.event_id) for e in (*jobs.requested.values(), *jobs.done.values())
    }
