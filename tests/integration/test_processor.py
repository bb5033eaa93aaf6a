"""The ingress processor on the real stack: routing to waiting runs, triggered starts,
audit, dead letters, the early-event race, and SIGKILLs during a stream of events."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from temporalio.client import Client

from flowledger.settings import Settings
from processors.app import Processor
from processors.triggers import trigger_run_id, trigger_workflow_id
from projections import db
from projections.projector import Projector
from projections.tables import workflow_runtime_events
from schemas.envelope import EventEnvelope
from tests.integration.runtime_support import (
    definition,
    processing,
    record,
    routed_waits,
    spawn_processor,
    stop_process,
    worker,
)
from tests.waiting import until
from topics.catalogue import AUDIT, DEADLETTER, EVENTS, RUNTIME
from topics.publisher import publish
from topics.reader import read_all
from workflows import control
from workflows.definitions import store
from workflows.messages import run_workflow_id

REPO = Path(__file__).resolve().parents[2]


def waiting(tenant: str = "acme", event_type: str = "order.paid") -> dict[str, Any]:
    """A run that waits for one event keyed by its input and returns the event's id."""
    return definition(
        [
            {
                "id": "w",
                "type": "event.wait",
                "event_type": event_type,
                "correlation_key": {"$expr": "payload.key"},
                "assign": {"vars.got": {"$expr": "event.event_id"}},
            },
            {"id": "ret", "type": "control.return", "output": {"$expr": "vars.got"}},
        ],
        tenant=tenant,
    )


def envelope(
    event_type: str = "order.paid",
    tenant: str = "acme",
    key: str | None = None,
    payload: dict[str, Any] | None = None,
    event_id: uuid.UUID | None = None,
) -> EventEnvelope:
    return EventEnvelope(
        event_id=event_id or uuid.uuid4(),
        event_type=event_type,
        tenant=tenant,
        occurred_at=datetime.now(UTC),
        workflow_correlation_key=key,
        payload=payload or {},
    )


def send(settings: Settings, *events: EventEnvelope) -> None:
    publish(settings, [(n, e) for n, e in enumerate(events, start=1)])


def send_raw(settings: Settings, values: list[bytes]) -> None:
    from topics import clients

    producer = clients.producer(settings)
    for value in values:
        # One key: all three land on one partition, in this order.
        producer.produce(settings.topic(EVENTS), key=b"same", value=value)
    assert producer.flush(10) == 0


eventually = until


def audits(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in read_all(settings, settings.topic(AUDIT))]


def runtime(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in read_all(settings, settings.topic(RUNTIME))]


async def start_waiting(
    settings: Settings, client: Client, document: dict[str, Any], key: str
) -> str:
    started = await control.start(settings, client, record(document), {"key": key})
    return started.run_id


async def result(client: Client, run_id: str, timeout: float = 30.0) -> Any:
    return await output_of(client, run_workflow_id(run_id), timeout)


async def output_of(client: Client, workflow_id: str, timeout: float = 30.0) -> Any:
    done = await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), timeout)
    return done["output"] if isinstance(done, dict) else done.output


def wait_created(settings: Settings, run_ids: set[str]) -> bool:
    seen = {e["run_id"] for e in runtime(settings) if e["type"] == "WaitCreated"}
    return run_ids <= seen


async def test_explicit_key_resumes_only_its_tenants_run(settings: Settings) -> None:
    async with worker(settings) as client, processing(settings):
        acme = await start_waiting(settings, client, waiting("acme"), "order-1")
        beta = await start_waiting(settings, client, waiting("beta"), "order-1")
        await eventually(lambda: wait_created(settings, {acme, beta}), what="waits")
        event = envelope(tenant="acme", key="order-1")
        send(settings, event)
        assert await result(client, acme) == str(event.event_id)
        desc = await client.get_workflow_handle(run_workflow_id(beta)).describe()
        assert desc.status is not None and desc.status.name == "RUNNING"
        found = await eventually(
            lambda: [a for a in audits(settings) if a["event_id"] == str(event.event_id)]
        )
        assert found[-1]["correlation_source"] == "explicit"
        assert [(d["run_id"], d["kind"], d["outcome"]) for d in found[-1]["deliveries"]] == [
            (acme, "signal", "delivered")
        ]
        await client.get_workflow_handle(run_workflow_id(beta)).terminate()


async def test_derived_key_through_configured_paths(settings: Settings) -> None:
    own = settings.model_copy(
        update={
            "correlation": settings.correlation.model_copy(
                update={"paths": json.dumps({"order.paid": "order.number"})}
            )
        }
    )
    async with worker(own) as client, processing(own):
        run_id = await start_waiting(own, client, waiting(), "42")
        await eventually(lambda: wait_created(own, {run_id}), what="wait")
        event = envelope(payload={"order": {"number": 42}})
        send(own, event)
        assert await result(client, run_id) == str(event.event_id)
        found = await eventually(
            lambda: [a for a in audits(own) if a["event_id"] == str(event.event_id)]
        )
        assert found[-1]["correlation_source"] == "derived"
        assert found[-1]["correlation_detail"] == "path:order.number"


def triggered(event_type: str, tenant: str = "acme") -> dict[str, Any]:
    return definition(
        [{"id": "ret", "type": "control.return", "output": {"$expr": "payload"}}],
        tenant=tenant,
        payload_schema={
            "type": "object",
            "properties": {"amount": {"type": "number"}},
            "required": ["amount"],
        },
        trigger={
            "type": "event",
            "event_type": event_type,
            "payload_mapping": {
                "amount": {"$expr": "event.payload.amount"},
                "source": "literal",
            },
        },
    )


async def test_missing_key_audited_not_routed_trigger_fires(settings: Settings) -> None:
    document = triggered("order.placed")
    store.publish(settings, document)
    async with worker(settings) as client, processing(settings):
        event = envelope(event_type="order.placed", payload={"amount": 5})
        bad = envelope(event_type="order.placed", payload={"amount": "five"})
        send(settings, event, bad)
        found = await eventually(
            lambda: (
                {a["event_id"]: a for a in audits(settings) if a["deliveries"]}
                if len([a for a in audits(settings) if a["deliveries"]]) >= 2
                else None
            ),
            what="two audits",
        )
        audit = found[str(event.event_id)]
        assert audit["error_code"] == "CORRELATION_MISSING"
        assert audit["correlation_source"] == "missing"
        wid = trigger_workflow_id("acme", document["id"], str(event.event_id))
        assert audit["deliveries"] == [
            {"run_id": trigger_run_id(wid), "wait_id": None, "kind": "start", "outcome": "started"}
        ]
        output = await output_of(client, wid)
        assert output == {"amount": 5, "source": "literal"}
        refused = found[str(bad.event_id)]["deliveries"][0]
        assert refused["outcome"] == "refused: RUN_INPUT_INVALID"


async def test_same_event_twice_resumes_starts_and_audits_once(settings: Settings) -> None:
    document = triggered("order.paid")
    store.publish(settings, document)
    async with worker(settings) as client, processing(settings) as runner:
        run_id = await start_waiting(settings, client, waiting(), "k-dup")
        # Known to the router, not only on the runtime topic: an event that overtakes
        # its wait is held first, and audited twice (held, then delivered).
        await eventually(
            lambda: routed_waits(runner, "acme", "order.paid", "k-dup"), what="wait routed"
        )
        event = envelope(key="k-dup", payload={"amount": 1})
        send(settings, event)
        send(settings, event)
        assert await result(client, run_id) == str(event.event_id)
        wid = trigger_workflow_id("acme", document["id"], str(event.event_id))
        await output_of(client, wid)
        # Both copies handled: the consumer group has committed past them.
        await eventually(lambda: _committed_total(settings) >= 2, what="commit")
    events = runtime(settings)
    resolved = [e for e in events if e["type"] == "WaitResolved" and e["run_id"] == run_id]
    assert len(resolved) == 1
    started = [e for e in events if e["type"] == "RunStarted" and e["data"]["workflow_id"] == wid]
    assert len(started) == 1
    mine = [a for a in audits(settings) if a["event_id"] == str(event.event_id)]
    assert len(mine) == 1
    projector = Projector(settings)
    try:
        projector.run_until_idle(60)
    finally:
        projector.close()
    engine = db.engine(settings.database_url())
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(workflow_runtime_events).where(
                    workflow_runtime_events.c.event_id == str(event.event_id)
                )
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    assert rows[0].delivery_count == 2


def _committed_total(settings: Settings) -> int:
    from processors.status import lag

    # The stage whose offsets move only past done effects: the routing topic's when
    # routing is partitioned (the forwarder commits ingress once its copies are written).
    report = lag(settings)
    return sum(r["committed"] or 0 for r in report.get("routing", report)["partitions"])


async def test_poison_record_dead_lettered_good_ones_processed(settings: Settings) -> None:
    good1, good2 = envelope(key="p1"), envelope(key="p2")
    send_raw(
        settings,
        [
            good1.model_dump_json().encode(),
            b'{"event_id": "nope", "bogus": 1}',
            good2.model_dump_json().encode(),
        ],
    )
    async with processing(settings):
        found = await eventually(
            lambda: audits(settings) if len(audits(settings)) >= 3 else None, what="audits"
        )
    by_id = {a["event_id"]: a for a in found}
    assert by_id[str(good1.event_id)]["error_code"] is None
    assert by_id[str(good2.event_id)]["error_code"] is None
    poison = by_id[None]
    assert poison["error_code"] == "RECORD_INVALID"
    dead = read_all(settings, settings.topic(DEADLETTER))
    assert len(dead) == 1
    assert dead[0].value == '{"event_id": "nope", "bogus": 1}'
    assert poison["source_offset"] == 1
    headers = _deadletter_headers(settings)
    assert headers["flowledger.reason"] == b"RECORD_INVALID"
    assert headers["flowledger.source.topic"] == settings.topic(EVENTS).encode()
    assert headers["flowledger.source.offset"] == b"1"
    assert b"event_id" in headers["flowledger.error"] or b"bogus" in headers["flowledger.error"]


def _deadletter_headers(settings: Settings) -> dict[str, bytes]:
    from confluent_kafka import TopicPartition

    from topics import clients

    consumer = clients.consumer(settings, f"dl-{uuid.uuid4().hex[:6]}")
    try:
        consumer.assign([TopicPartition(settings.topic(DEADLETTER), 0, 0)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                return {k: v for k, v in (msg.headers() or []) if isinstance(v, bytes)}
        raise AssertionError("no dead letter")
    finally:
        consumer.close()


async def test_race_event_overtakes_wait_registration(settings: Settings) -> None:
    document = waiting()
    async with worker(settings) as client, processing(settings):
        keys = [f"race-{n}" for n in range(50)]

        async def one(key: str) -> tuple[str, EventEnvelope]:
            event = envelope(key=key)
            run_id, _ = await asyncio.gather(
                start_waiting(settings, client, document, key),
                asyncio.to_thread(send, settings, event),
            )
            return run_id, event

        pairs = await asyncio.gather(*(one(k) for k in keys))
        results = await asyncio.gather(*(result(client, r, 60) for r, _ in pairs))
    assert results == [str(e.event_id) for _, e in pairs]


async def test_sigkill_during_5000_events_each_wait_resumes_once(
    settings: Settings, tmp_path: Path
) -> None:
    runs = 200
    events_per_run = 25  # 5,000 events; one per run matches its wait
    document = waiting()
    log = tmp_path / "processor.log"
    async with worker(settings) as client:
        run_ids = await asyncio.gather(
            *(start_waiting(settings, client, document, f"kill-{n}") for n in range(runs))
        )
        await eventually(lambda: wait_created(settings, set(run_ids)), 60, "waits")
        matching: dict[str, EventEnvelope] = {}
        batch: list[EventEnvelope] = []
        for n in range(runs):
            for m in range(events_per_run):
                if m == events_per_run // 2:
                    event = envelope(key=f"kill-{n}")
                    matching[run_ids[n]] = event
                else:
                    event = envelope(key=f"nobody-{n}-{m}", event_type="noise")
                batch.append(event)
        proc = spawn_processor(settings, log)
        try:
            for chunk in range(5):
                part = batch[chunk * 1000 : (chunk + 1) * 1000]
                await asyncio.to_thread(send, settings, *part)
                await eventually(
                    lambda floor=chunk * 1000: _committed_total(settings) > floor, 60, "progress"
                )
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                proc = spawn_processor(settings, log)
            outputs = await asyncio.gather(*(result(client, r, 90) for r in run_ids))
        finally:
            stop_process(proc, 20)
    assert outputs == [str(matching[r].event_id) for r in run_ids]
    resolved = Counter(
        e["data"]["wait_id"]
        for e in runtime(settings)
        if e["type"] == "WaitResolved" and e["run_id"] in set(run_ids)
    )
    assert len(resolved) == runs
    assert set(resolved.values()) == {1}


def _final_audits(settings: Settings) -> Counter[str]:
    """Audit records per event id, held ones (the early-event window) left out."""
    from processors import audit as audit_records

    found: Counter[str] = Counter()
    for r in read_all(settings, settings.topic(AUDIT)):
        if not audit_records.is_held(r.headers):
            found[json.loads(r.value)["event_id"]] += 1
    return found


def _resolutions(settings: Settings, run_ids: set[str]) -> Counter[str]:
    return Counter(
        e["data"]["wait_id"]
        for e in runtime(settings)
        if e["type"] == "WaitResolved" and e["run_id"] in run_ids
    )


async def test_two_instances_in_one_group_share_the_work(settings: Settings) -> None:
    runs = 24
    document = waiting()
    async with worker(settings) as client:
        run_ids = await asyncio.gather(
            *(start_waiting(settings, client, document, f"pair-{n}") for n in range(runs))
        )
        await eventually(lambda: wait_created(settings, set(run_ids)), 60, "waits")
        matching = [envelope(key=f"pair-{n}") for n in range(runs)]
        # No correlation key: audited at once (not held), and no wait to route to.
        noise = [envelope(event_type="noise") for _ in range(96)]
        half, rest = runs // 2, runs - runs // 2
        async with processing(settings) as one:
            await asyncio.to_thread(send, settings, *matching[:half], *noise[:48])
            await eventually(lambda: one.stats.records > 0, 60, "first instance at work")
            async with processing(settings) as two:
                # The group hands some of the six partitions over to the second one.
                await eventually(lambda: two._assigned, 60, "second instance assigned")
                await eventually(lambda: len(one._assigned) < 6, 60, "first gives some up")
                await asyncio.to_thread(send, settings, *matching[half:], *noise[48:])
                outputs = await asyncio.gather(*(result(client, r, 60) for r in run_ids))
                everything = {str(e.event_id) for e in [*matching, *noise]}
                await eventually(
                    lambda: everything <= set(_final_audits(settings)), 60, "every audit"
                )
                await eventually(
                    lambda: _committed_total(settings) >= len(everything), 60, "commits"
                )
            assert one.stats.records > 0 and two.stats.records > 0
    assert rest > 0 and outputs == [str(e.event_id) for e in matching]
    resolved = _resolutions(settings, set(run_ids))
    assert len(resolved) == runs and set(resolved.values()) == {1}
    audited = _final_audits(settings)
    assert {audited[e] for e in everything} == {1}


def _dead_temporal(settings: Settings) -> Settings:
    """The same settings, Temporal pointed at a loopback port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return settings.model_copy(
        update={
            "temporal": settings.temporal.model_copy(update={"address": f"127.0.0.1:{port}"}),
            "processor": settings.processor.model_copy(
                update={"retry_initial_backoff_s": 0.1, "retry_max_backoff_s": 0.5}
            ),
        }
    )


async def test_temporal_unavailable_commits_nothing_and_loses_nothing(settings: Settings) -> None:
    from temporalio.contrib.pydantic import pydantic_data_converter

    from workflows.client import connect

    dead = _dead_temporal(settings)
    document = waiting()
    async with worker(settings) as client:
        run_ids = await asyncio.gather(
            *(start_waiting(settings, client, document, f"down-{n}") for n in range(5))
        )
        await eventually(lambda: wait_created(settings, set(run_ids)), 60, "waits")
        events = [envelope(key=f"down-{n}") for n in range(5)]
        await asyncio.to_thread(send, settings, *events)

        # 1. Temporal does not answer at start: the processor keeps trying to connect.
        attempts = 0

        async def counting(s: Settings) -> Client:
            nonlocal attempts
            attempts += 1
            return await connect(s)

        stop = threading.Event()
        runner = Processor(dead, stop, client_factory=counting)
        task = asyncio.create_task(runner.run())
        await eventually(lambda: attempts >= 3, 60, "connect retries")
        assert _committed_total(settings) == 0
        stop.set()
        await task

        # 2. Temporal goes away after the connect: every signal fails and is retried
        # with backoff; the records are consumed but nothing is audited or committed.
        async def lazy(s: Settings) -> Client:
            return await Client.connect(
                s.temporal.address,
                namespace=s.temporal.namespace,
                data_converter=pydantic_data_converter,
                lazy=True,
            )

        stop = threading.Event()
        runner = Processor(dead, stop, client_factory=lazy)
        task = asyncio.create_task(runner.run())
        await eventually(
            lambda: runner.stats.records >= len(events) and runner.backoff.retries >= 6,
            60,
            "signal retries",
        )
        stop.set()
        await task
        assert runner.stats.signals == 0
        assert _committed_total(settings) == 0
        assert not _final_audits(settings)
        for run_id in run_ids:
            desc = await client.get_workflow_handle(run_workflow_id(run_id)).describe()
            assert desc.status is not None and desc.status.name == "RUNNING"

        # 3. The right address again: everything delivered, exactly once.
        async with processing(settings):
            outputs = await asyncio.gather(*(result(client, r, 60) for r in run_ids))
            await eventually(lambda: _committed_total(settings) >= len(events), 60, "commits")
    assert outputs == [str(e.event_id) for e in events]
    resolved = _resolutions(settings, set(run_ids))
    assert len(resolved) == len(run_ids) and set(resolved.values()) == {1}
    audited = _final_audits(settings)
    assert {audited[str(e.event_id)] for e in events} == {1}


async def test_kafka_unavailable_at_start_retries_then_processes_once(settings: Settings) -> None:
    import socket

    events = [envelope(event_type="noise") for _ in range(3)]
    await asyncio.to_thread(send, settings, *events)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"bootstrap_servers": f"127.0.0.1:{port}", "request_timeout_s": 1.0}
            ),
            "processor": settings.processor.model_copy(
                update={"retry_initial_backoff_s": 0.1, "retry_max_backoff_s": 0.5}
            ),
        }
    )
    stop = threading.Event()
    runner = Processor(dead, stop)
    task = asyncio.create_task(runner.run())
    await eventually(lambda: runner.backoff.retries >= 3, 60, "Kafka retries")
    stop.set()
    await task
    assert runner.stats.records == 0
    assert _committed_total(settings) == 0 and not _final_audits(settings)

    async with processing(settings):
        await eventually(lambda: _committed_total(settings) >= len(events), 60, "commits")
    audited = _final_audits(settings)
    assert {audited[str(e.event_id)] for e in events} == {1}
