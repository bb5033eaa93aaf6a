"""The first stage of the partitioned router: ingress records re-keyed by routing key.

Consumes flowledger.events.v1 in the processor's group and writes each record, its
bytes, key, headers and timestamp unchanged, to the partition of
flowledger.internal.routing.v1 that its routing key falls in (processors/routing_key.py),
with its ingress coordinates in a header. The ingress offsets are committed only once
Kafka acknowledged every copy before them, so a crash forwards a record again rather
than lose it, and the router's completion keys make the second copy a duplicate. Nothing
else is decided here: validation, de-duplication, routing and the audit are the
router's, on the copy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from flowledger import tracing
from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from processors.correlation import CorrelationPaths
from processors.effects import Backoff
from processors.routing_key import SOURCE_HEADER, record_partition, source_header
from topics import clients
from topics.admin import end_offsets
from topics.catalogue import EVENTS, ROUTING
from topics.codes import TOPIC_MISSING
from topics.consuming import take
from topics.producing import Header, NotAcknowledged, Outgoing, produce_all

log = logging.getLogger(__name__)


class Forwarder:
    def __init__(self, settings: Settings, paths: CorrelationPaths, backoff: Backoff) -> None:
        self.settings = settings
        self.paths = paths
        self.backoff = backoff
        self.events_topic = settings.topic(EVENTS)
        self.routing_topic = settings.topic(ROUTING)
        self.partitions = 0
        self.forwarded = 0
        # Set after a turn that found nothing and every owned partition forwarded to its
        # end (for `run --until-idle`).
        self.caught_up = False
        self._consumer: Consumer | None = None
        self._producer = clients.producer(settings)
        self._assigned: set[int] = set()
        self._admin: AdminClient | None = None
        # Only `run --until-idle` asks whether every owned partition is forwarded to its
        # end: asking costs round trips while a record that lands meanwhile waits.
        self.watch_end = False

    def open(self) -> None:
        timeout = self.settings.kafka.request_timeout_s
        session_ms = int(self.settings.processor.session_timeout_s * 1000)
        consumer = clients.consumer(
            self.settings,
            self.settings.processor.group_id,
            **{
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, min(3000, session_ms // 3)),
            },
        )
        meta = consumer.list_topics(self.routing_topic, timeout=timeout).topics.get(
            self.routing_topic
        )
        if meta is None or meta.error is not None or not meta.partitions:
            consumer.close()
            raise ServiceUnavailable(
                f"topic {self.routing_topic} is not available (run `flowledger topics ensure`)",
                code=TOPIC_MISSING,
                topic=self.routing_topic,
            )
        self.partitions = len(meta.partitions)
        consumer.subscribe(
            [self.events_topic],
            on_assign=lambda _c, tps: self._assigned.update(tp.partition for tp in tps),
            on_revoke=lambda _c, tps: self._assigned.difference_update(tp.partition for tp in tps),
            on_lost=lambda _c, tps: self._assigned.difference_update(tp.partition for tp in tps),
        )
        self._consumer = consumer

    async def run(self, stopped: asyncio.Event) -> None:
        """Forward until `stopped` is set (by the router's loop on its way out)."""
        while not stopped.is_set():
            await self.turn()

    async def turn(self) -> None:
        assert self._consumer is not None
        # A lone event is forwarded the moment it lands, not after the poll timeout.
        messages = await asyncio.to_thread(
            take,
            self._consumer,
            self.settings.processor.batch_size,
            self.settings.processor.poll_timeout_s,
        )
        batch = [m for m in messages if not m.error()]
        if not batch:
            if self.watch_end:
                self.caught_up = await asyncio.to_thread(self._at_end)
            return
        self.caught_up = False
        await produce_all(
            self._producer,
            [self._copy(m) for m in batch],
            self._retry_producing,
            self.settings.kafka.request_timeout_s,
        )
        ends: dict[int, int] = {}
        for m in batch:
            partition, offset = m.partition(), m.offset()
            assert partition is not None and offset is not None
            ends[partition] = offset + 1
        try:
            await asyncio.to_thread(
                self._consumer.commit,
                offsets=[TopicPartition(self.events_topic, p, o) for p, o in ends.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Forwarded and acknowledged: a later commit covers these offsets too.
            log.warning("forwarder commit failed, will retry: %s", exc)
        self.forwarded += len(batch)

    def _copy(self, msg: Message) -> Outgoing:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        value = msg.value()
        headers: list[Header] = [
            (k, v) for k, v in tracing.pairs(msg.headers()) if k != SOURCE_HEADER
        ]
        headers.append((SOURCE_HEADER, source_header(topic, partition, offset)))
        return Outgoing(
            self.routing_topic,
            msg.key(),
            value,
            headers,
            timestamp_ms=msg.timestamp()[1],
            partition=record_partition(
                value,
                topic,
                partition,
                offset,
                paths=self.paths,
                limits=self.settings.records,
                partitions=self.partitions,
            ),
        )

    def _at_end(self) -> bool:
        assert self._consumer is not None
        owned = sorted(self._assigned)
        if not owned:
            return False
        timeout = self.settings.kafka.request_timeout_s
        partitions = [TopicPartition(self.events_topic, p) for p in owned]
        positions = self._consumer.position(partitions)
        # One request of a client of its own: the group consumer would queue each
        # watermark request behind its fetch long-poll.
        if self._admin is None:
            self._admin = clients.admin(self.settings)
        ends = end_offsets(self._admin, [(self.events_topic, p) for p in owned], timeout)
        unknown = [TopicPartition(tp.topic, tp.partition) for tp in positions if tp.offset < 0]
        committed = (
            {tp.partition: tp.offset for tp in self._consumer.committed(unknown, timeout=timeout)}
            if unknown
            else {}
        )
        for tp in positions:
            high = ends[(self.events_topic, tp.partition)]
            done = tp.offset if tp.offset >= 0 else committed.get(tp.partition, -1)
            if done < 0:
                # Nothing consumed or committed yet: at the end only if the partition
                # holds nothing (an empty ingress is idle too).
                done, _high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.events_topic, tp.partition), timeout=timeout
                )
            if done < high:
                return False
        return True

    async def _retry_producing(self, what: str, call: Callable[[], Awaitable[None]]) -> None:
        await self.backoff.retry(what, call, on=(NotAcknowledged,))

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._producer.flush(self.settings.kafka.request_timeout_s)
