"""Producing records and knowing which ones Kafka acknowledged: the one produce ->
delivery report -> flush -> check path of every producer in flowledger (the publisher,
the definitions store, the worker's emitter, the processor's audits and dead letters)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

log = logging.getLogger(__name__)

Header = tuple[str, str | bytes | None]


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[Header] = field(default_factory=list)
    # The record's own time (ms since the epoch); None lets the producer stamp it now.
    timestamp_ms: int | None = None
    # The partition to write to; None lets the producer's partitioner choose by key.
    partition: int | None = None


@dataclass(frozen=True)
class Acknowledged:
    item: Outgoing
    partition: int
    offset: int


@dataclass
class Round:
    """One produce-and-flush: what Kafka acknowledged, and what it did not (with why)."""

    acknowledged: list[Acknowledged] = field(default_factory=list)
    failed: list[tuple[Outgoing, str]] = field(default_factory=list)

    def unacknowledged(self) -> list[Outgoing]:
        return [item for item, _why in self.failed]


def produce(
    producer: Producer,
    item: Outgoing,
    on_delivery: Callable[[KafkaError | None, Message], None],
) -> None:
    """Hand one item to the producer (it may raise BufferError or KafkaException)."""
    if item.partition is not None:
        producer.produce(
            item.topic,
            key=item.key,
            value=item.value,
            partition=item.partition,
            headers=item.headers or None,
            timestamp=item.timestamp_ms or 0,
            on_delivery=on_delivery,
        )
        return
    producer.produce(
        item.topic,
        key=item.key,
        value=item.value,
        headers=item.headers or None,
        timestamp=item.timestamp_ms or 0,
        on_delivery=on_delivery,
    )


class NotAcknowledged(Exception):
    """Some records were not acknowledged; producing them again may succeed."""


def produce_and_flush(producer: Producer, items: Sequence[Outgoing], timeout: float) -> Round:
    """Produce every item, wait up to ``timeout`` for Kafka, and say what became of each.
    Blocks: from async code, run it in a thread."""
    result = Round()
    reported: set[int] = set()

    def callback(item: Outgoing) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            reported.add(id(item))
            if err is not None:
                result.failed.append((item, str(err)))
                return
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            result.acknowledged.append(Acknowledged(item, partition, offset))

        return on_delivery

    for item in items:
        while True:
            try:
                produce(producer, item, callback(item))
                break
            except BufferError:
                # The local queue is full: let deliveries drain it, then go on.
                producer.poll(0.05)
            except KafkaException as exc:
                reported.add(id(item))
                result.failed.append((item, str(exc)))
                break
        producer.poll(0)
    producer.flush(timeout)
    result.failed.extend(
        (item, f"not acknowledged within {timeout:.0f}s")
        for item in items
        if id(item) not in reported
    )
    return result


Retry = Callable[[str, Callable[[], Awaitable[None]]], Awaitable[None]]


async def produce_all(
    producer: Producer, items: list[Outgoing], retry: Retry, timeout: float
) -> None:
    """Every item acknowledged, whatever it takes: each round resends only what Kafka
    has not acknowledged yet, under the caller's retry policy (which raises
    NotAcknowledged's way out when it gives up or is stopped)."""
    pending = items

    async def attempt() -> None:
        nonlocal pending
        done = await asyncio.to_thread(produce_and_flush, producer, pending, timeout)
        pending = done.unacknowledged()
        if pending:
            raise NotAcknowledged(f"{len(pending)} record(s) not acknowledged: {done.failed[0][1]}")

    if pending:
        await retry("producing", attempt)


class Sink:
    """Records handed over one by one as they become ready (produce never waits), then
    `finish`: one flush, and whatever Kafka did not acknowledge goes through
    `produce_all`."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.items: list[Outgoing] = []
        self.acked: set[int] = set()

    def send(self, item: Outgoing) -> None:
        self.items.append(item)

        def on_delivery(err: KafkaError | None, _msg: Message, key: int = id(item)) -> None:
            if err is None:
                self.acked.add(key)

        try:
            produce(self.producer, item, on_delivery)
        except (BufferError, KafkaException) as exc:
            # Left unacknowledged: `finish` produces it again.
            log.debug("produce deferred: %s", exc)
        self.producer.poll(0)

    async def finish(self, retry: Retry, timeout: float) -> None:
        if not self.items:
            return
        await asyncio.to_thread(self.producer.flush, timeout)
        pending = [i for i in self.items if id(i) not in self.acked]
        await produce_all(self.producer, pending, retry, timeout)
