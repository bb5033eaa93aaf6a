"""Producing a batch of records and waiting until Kafka has acknowledged every one;
what Kafka refuses is produced again after a backoff, never dropped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from processors.effects import Backoff, Transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]


def _produce_once(producer: Producer, items: list[Outgoing], timeout: float) -> list[Outgoing]:
    failed: list[Outgoing] = []
    acked: list[Outgoing] = []

    def callback(item: Outgoing) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            (failed if err is not None else acked).append(item)

        return on_delivery

    for item in items:
        while True:
            try:
                producer.produce(
                    item.topic,
                    key=item.key,
                    value=item.value,
                    headers=item.headers or None,
                    on_delivery=callback(item),
                )
                break
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                raise Transient(str(exc)) from exc
    producer.flush(timeout)
    done = {id(i) for i in acked}
    return [i for i in items if id(i) not in done]


async def produce_all(
    producer: Producer, items: list[Outgoing], backoff: Backoff, timeout: float
) -> None:
    pending = items

    async def attempt() -> None:
        # each attempt resends only what Kafka has not acknowledged yet
        nonlocal pending
        pending = await asyncio.to_thread(_produce_once, producer, pending, timeout)
        if pending:
            raise Transient(f"{len(pending)} record(s) not acknowledged")

    if pending:
        await backoff.retry("producing", attempt)


class Sink:
    """Records handed over one by one as they become ready (produce never waits), then
    `finish`: one flush, and whatever Kafka did not acknowledge goes through
    `produce_all` (backoff, never dropped)."""

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
            self.producer.produce(
                item.topic,
                key=item.key,
                value=item.value,
                headers=item.headers or None,
                on_delivery=on_delivery,
            )
        except (BufferError, KafkaException) as exc:
            # Left unacknowledged: `finish` produces it again.
            log.debug("produce deferred: %s", exc)
        self.producer.poll(0)

    async def finish(self, backoff: Backoff, timeout: float) -> None:
        if not self.items:
            return
        await asyncio.to_thread(self.producer.flush, timeout)
        pending = [i for i in self.items if id(i) not in self.acked]
        await produce_all(self.producer, pending, backoff, timeout)
