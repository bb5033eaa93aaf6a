"""Audit records on flowledger.audit.v1: keyed tenant:event_id, one per event. An
event held for a wait not seen yet is audited at once with a `held` header (not yet
complete) and again, complete, when it is delivered or its window ends.

A batch's records (audits and dead letters) go out through a `BatchSink`, which waits
for the acknowledgements of that batch's own records only: a flush of the shared
producer would also wait for every record the batches behind it produce meanwhile,
so batches in flight would finish in waves instead of one after the other."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from processors.pipeline import Plan
from processors.routing_key import PARTITION_HEADER
from topics.producing import Outgoing, Retry, produce, produce_all
from topics.serde import encode

HELD_HEADER = "flowledger.held"
# How long the acknowledgement thread blocks in one poll of the producer.
ACK_POLL_S = 0.05


def audit_key(plan: Plan) -> bytes:
    audit = plan.audit
    if audit.tenant and audit.event_id:
        return f"{audit.tenant}:{audit.event_id}".encode()
    if plan.record.key:
        return plan.record.key
    return f"ingress:{audit.source_topic}:{audit.source_partition}:{audit.source_offset}".encode()


def outgoing(
    topic: str,
    plan: Plan,
    held: bool,
    routing_partition: int | None = None,
    audit_partitions: int = 0,
) -> Outgoing:
    marks = headers(held)
    partition = None
    if routing_partition is not None:
        # Whose state it folds into: the routing partition's (partitioned routing).
        marks.append((PARTITION_HEADER, str(routing_partition).encode()))
        if audit_partitions:
            # Written where that partition's owner reads, so no owner reads them all.
            partition = routing_partition % audit_partitions
    return Outgoing(topic, audit_key(plan), encode(plan.audit), marks, partition=partition)


def headers(held: bool) -> list[tuple[str, str | bytes | None]]:
    return [(HELD_HEADER, b"true")] if held else []


def is_held(raw_headers: object) -> bool:
    if isinstance(raw_headers, dict):
        return raw_headers.get(HELD_HEADER) in (b"true", "true")
    if isinstance(raw_headers, list):
        return any(item == (HELD_HEADER, b"true") for item in raw_headers)
    return False


class Acknowledger:
    """Serves the producer's delivery reports in a thread of its own, so that a batch
    learns of its records' acknowledgements as they come, without a flush."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="processor-acks", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(ACK_POLL_S)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class BatchSink:
    """One batch's records, produced as they become ready (produce never waits), then
    `finish`: wait for their acknowledgements (served by the Acknowledger), and
    whatever Kafka did not acknowledge in time, or refused, goes through `produce_all`
    until it is."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.items: list[Outgoing] = []
        self.acked: set[int] = set()
        self._reported = 0
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        # Made by `finish` (no record is sent after it): a report that comes while the
        # plans are still sending records must not end the wait for those after it.
        self._all_reported: asyncio.Future[None] | None = None

    def send(self, item: Outgoing) -> None:
        self.items.append(item)
        try:
            produce(self.producer, item, self._on_delivery(id(item)))
        except (BufferError, KafkaException):
            # Left unacknowledged: `finish` produces it again.
            self._count_report()

    def _on_delivery(self, key: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self.acked.add(key)
            self._count_report()

        return on_delivery

    def _count_report(self) -> None:
        # Delivery reports come in on the Acknowledger's thread or any other that polls
        # the producer (a flush); the future is the loop's, which checks again there.
        with self._lock:
            self._reported += 1
            reported = self._reported
        if reported >= len(self.items):
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        waiting = self._all_reported
        if waiting is not None and not waiting.done() and self._reported >= len(self.items):
            waiting.set_result(None)

    async def finish(self, retry: Retry, timeout: float) -> None:
        if not self.items:
            return
        if self._reported < len(self.items):
            self._all_reported = self._loop.create_future()
            # Not all reported in time: what was not acknowledged is produced again.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_reported, timeout)
        pending = [i for i in self.items if id(i) not in self.acked]
        await produce_all(self.producer, pending, retry, timeout)
