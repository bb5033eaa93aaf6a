"""Synthetic runtime history for the processor's restart benchmark and test: closed
runs (started, a wait created, resolved by an event, the run completed), older than the
de-duplication horizon, then the open waits. Produced in bulk from text templates (no
models per record) with big batches, so millions of records take seconds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from flowledger.settings import Settings
from topics import clients
from topics.catalogue import RUNTIME
from topics.serde import decode_runtime

TENANT = "bench"
EVENT_TYPE = "bench.go"
# Closed history this old is past the default horizon (7 days): live state holds none.
CLOSED_AGE = timedelta(days=30)


def _uuid(kind: int, n: int) -> str:
    return f"{kind:08x}-0000-4000-8000-{n:012x}"


def _record(run: str, seq: int, at: str, kind: str, data: str) -> bytes:
    event_id = _uuid(seq, int(run[-12:], 16))
    return (
        f'{{"event_id":"{event_id}","run_id":"{run}","tenant":"{TENANT}","seq":{seq},'
        f'"occurred_at":"{at}","type":"{kind}","data":{data}}}'
    ).encode()


def wait_created(run: str, seq: int, at: str, wait: str, key: str) -> bytes:
    """A WaitCreated record of an event wait for `key`."""
    data = (
        f'{{"wait_id":"{wait}","wait_type":"event","step_path":"root.steps[0]",'
        f'"event_type":"{EVENT_TYPE}","correlation_key":"{key}","eligible_from":"{at}"}}'
    )
    return _record(run, seq, at, "WaitCreated", data)


def closed_run(n: int, at: str) -> list[bytes]:
    """The records of closed run number `n`."""
    run, wait, event = _uuid(1, n), _uuid(2, n), _uuid(3, n)
    return [
        _record(
            run, 1, at, "RunStarted", '{"definition_id":"bench","version":1,"definition_hash":"h"}'
        ),
        wait_created(run, 2, at, wait, f"c{n}"),
        _record(
            run,
            3,
            at,
            "WaitResolved",
            f'{{"wait_id":"{wait}","resolution":"RESOLVED","matched_event_id":"{event}"}}',
        ),
        _record(run, 4, at, "RunCompleted", '{"status":"SUCCEEDED"}'),
    ]


def samples(now: datetime) -> list[bytes]:
    """One closed run's records, to check that the templates make valid events."""
    return closed_run(0, (now - CLOSED_AGE).isoformat())


def open_wait_records(count: int, at: str) -> Iterator[tuple[str, bytes]]:
    """(run_id, WaitCreated record) of the waits left open, keys `open-<n>`."""
    for n in range(count):
        run = _uuid(4, n)
        yield run, wait_created(run, 1, at, _uuid(5, n), f"open-{n}")


def produce(settings: Settings, history: int, open_waits: int) -> int:
    """`history` runtime records in all, the last `open_waits` of them WaitCreated
    records of waits left open (keys `open-<n>`); returns how many were produced."""
    now = datetime.now(UTC)
    for raw in samples(now):
        decode_runtime(raw)  # the templates still make valid runtime events
    producer = clients.producer(
        settings,
        **{
            "linger.ms": 200,
            "batch.size": 4_000_000,
            "batch.num.messages": 100_000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "compression.type": "lz4",
        },
    )
    topic = settings.topic(RUNTIME)
    old = (now - CLOSED_AGE).isoformat()
    recent = (now - timedelta(minutes=5)).isoformat()
    produced = 0

    def send(key: str, value: bytes) -> None:
        nonlocal produced
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        produced += 1
        if produced % 20_000 == 0:
            producer.poll(0)

    closed_runs = max(0, history - open_waits) // 4
    for n in range(closed_runs):
        records = closed_run(n, old)
        key = _uuid(1, n)
        for value in records:
            send(key, value)
    for key, value in open_wait_records(open_waits, recent):
        send(key, value)
    left = producer.flush(300)
    if left:
        raise RuntimeError(f"Kafka did not acknowledge {left} history records")
    return produced
