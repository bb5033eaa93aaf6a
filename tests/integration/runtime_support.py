"""Shared pieces of the runtime's integration tests: a worker on the test's own task
queue, definition records built in memory, and runtime events read back from Kafka."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from flowledger.settings import Settings
from processors.app import Processor
from processors.partitioned_follower import PartitionedFollower
from processors.router_index import OpenWait
from projections import migrate
from schemas.definition_record import DefinitionRecord
from schemas.envelope import EventEnvelope
from tests.waiting import Timeout
from tests.waiting import until as wait_until
from topics.catalogue import RUNTIME
from topics.publisher import publish
from topics.reader import read_all
from workflows import control
from workflows.activities import RuntimeActivities
from workflows.client import connect
from workflows.definitions.canonical import definition_hash
from workflows.messages import run_workflow_id
from workflows.worker import build_worker

REPO = Path(__file__).resolve().parents[2]


def definition(steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": f"def-{uuid.uuid4().hex[:6]}",
        "version": 1,
        "tenant": "acme",
        "name": "test",
        "description": "",
        "steps": steps,
        **extra,
    }


def record(document: dict[str, Any]) -> DefinitionRecord:
    return DefinitionRecord(
        tenant=document["tenant"],
        definition_id=document["id"],
        version=document["version"],
        hash=definition_hash(document),
        published_at=datetime.now(UTC),
        definition=document,
    )


@asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[Client]:
    # As `flowledger worker` does: the action ledger is one of the migrated tables.
    await asyncio.to_thread(migrate.upgrade, settings.database_url())
    client = await connect(settings)
    activities = RuntimeActivities(settings)
    async with build_worker(client, settings, activities):
        yield client
    activities.close()


async def start(
    settings: Settings, client: Client, document: dict[str, Any], data: dict[str, Any] | None = None
) -> tuple[str, WorkflowHandle[Any, Any]]:
    started = await control.start(settings, client, record(document), data or {})
    return started.run_id, client.get_workflow_handle(run_workflow_id(started.run_id))


def events_of(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    found = [json.loads(r.value) for r in read_all(settings, settings.topic(RUNTIME))]
    return sorted((e for e in found if e["run_id"] == run_id), key=lambda e: e["seq"])


async def wait_for_events(
    settings: Settings, run_id: str, until: str = "RunCompleted", timeout: float = 30.0
) -> list[dict[str, Any]]:
    def reached() -> list[dict[str, Any]] | None:
        events = events_of(settings, run_id)
        return events if any(e["type"] == until for e in events) else None

    try:
        found: list[dict[str, Any]] = await wait_until(reached, timeout, f"{until} of {run_id}")
    except Timeout:
        # The caller's assertions say what is missing from what did arrive.
        return await asyncio.to_thread(events_of, settings, run_id)
    return found


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def completed(events: list[dict[str, Any]]) -> dict[str, Any]:
    done = of_type(events, "RunCompleted")
    assert done, f"no RunCompleted in {types(events)}"
    return dict(done[-1]["data"])


@contextmanager
def projector(settings: Settings) -> Iterator[None]:
    """The projector of the test's database, running in a thread."""
    from projections.projector import Projector

    stop = threading.Event()
    instance = Projector(settings)
    thread = threading.Thread(target=instance.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


until = wait_until


# A killed component's partitions move on within seconds, not 45.
SESSION_TIMEOUT_S = 6


@asynccontextmanager
async def processing(settings: Settings) -> AsyncIterator[Processor]:
    """The ingress processor in this test's event loop, stopped (and awaited) on exit."""
    stop = threading.Event()
    runner = Processor(settings, stop)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        stop.set()
        await task


def routed_waits(runner: Processor, tenant: str, event_type: str, key: str) -> list[OpenWait]:
    """The open waits the processor would hand an event with this routing key, in
    either routing mode (partitioned: the states of the partitions it owns)."""
    follower = runner.follower
    if isinstance(follower, PartitionedFollower):
        indexes = [state.index for state in list(follower.parts.values())]
    else:
        indexes = [follower.index]
    return [wait for index in indexes for wait in index.matching(tenant, event_type, key)]


def component_env(settings: Settings) -> dict[str, str]:
    """The environment of a `flowledger` component started by a test: the test's own
    services, topics, groups and task queue, nothing inherited from the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    env.update(
        {
            "FLOWLEDGER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "FLOWLEDGER_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
            "FLOWLEDGER_KAFKA__CLIENT_ID": settings.kafka.client_id,
            "FLOWLEDGER_TEMPORAL__ADDRESS": settings.temporal.address,
            "FLOWLEDGER_TEMPORAL__NAMESPACE": settings.temporal.namespace,
            "FLOWLEDGER_TEMPORAL__TASK_QUEUE": settings.temporal.task_queue,
            "FLOWLEDGER_DATABASE__URL": settings.database_url(),
            "FLOWLEDGER_STACK__STATE_DIR": str(settings.stack.state_dir),
            "FLOWLEDGER_PROCESSOR__GROUP_ID": settings.processor.group_id,
            "FLOWLEDGER_PROCESSOR__SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
            "FLOWLEDGER_PROCESSOR__ROUTING": settings.processor.routing,
            "FLOWLEDGER_PROJECTOR__GROUP_ID": settings.projector.group_id,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it does not stop within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def spawn_processor(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`flowledger processor` as its own process, for tests that kill it or watch its pid."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "flowledger"), "processor"],
            env=component_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def keyed_event(tenant: str, event_type: str, key: str, field: str) -> EventEnvelope:
    """An event with an explicit correlation key, which its payload repeats in `field`."""
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event_type,
        tenant=tenant,
        occurred_at=datetime.now(UTC),
        workflow_correlation_key=key,
        payload={field: key},
    )


def send(settings: Settings, events: list[EventEnvelope]) -> None:
    if events:
        publish(settings, list(enumerate(events, start=1)))
