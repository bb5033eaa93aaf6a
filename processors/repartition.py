"""A consumer group that re-keys one topic onto an internal one, the shell shared by
the two stages of partitioned routing (processors/forwarder.py, processors/waits_relay.py).

Each record consumed is written, its bytes, key and headers kept, as the copies that
`copies` makes of it, with its coordinates in a header. Offsets are committed only once
Kafka acknowledged every copy before them, so a crash writes a record again rather than
lose it; the readers of the internal topic take a second copy as the same fact."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from flowledger import tracing
from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from processors.effects import Backoff
from processors.routing_key import SOURCE_HEADER, source_header
from topics import clients
from topics.admin import end_offsets
from topics.codes import TOPIC_MISSING
from topics.consuming import take
from topics.producing import Header, NotAcknowledged, Outgoing, produce_all

log = logging.getLogger(__name__)


def member_consumer(settings: Settings, group: str) -> Consumer:
    """A consumer for one of the processor's groups: a dead member's partitions move on
    within `processor.session_timeout_s`."""
    session_ms = int(settings.processor.session_timeout_s * 1000)
    return clients.consumer(
        settings,
        group,
        **{
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, min(3000, session_ms // 3)),
        },
    )


class Repartitioner:
    def __init__(
        self, settings: Settings, backoff: Backoff, *, source: str, target: str, group: str
    ) -> None:
        self.settings = settings
        self.backoff = backoff
        self.source_topic = source
        self.target_topic = target
        self.group = group
        # Partitions of the target topic (known once open).
        self.partitions = 0
        self.forwarded = 0
        # Set after a turn that found nothing and every owned partition copied to its
        # end (for `run --until-idle`).
        self.caught_up = False
        self._consumer: Consumer | None = None
        self._producer = clients.producer(settings)
        self._assigned: set[int] = set()
        # Offsets copied and acknowledged whose commit has not succeeded yet.
        self._uncommitted: dict[int, int] = {}
        self._admin: AdminClient | None = None
        # Only `run --until-idle` asks whether every owned partition is copied to its
        # end: asking costs round trips while a record that lands meanwhile waits.
        self.watch_end = False

    def open(self) -> None:
        timeout = self.settings.kafka.request_timeout_s
        consumer = member_consumer(self.settings, self.group)
        meta = consumer.list_topics(self.target_topic, timeout=timeout).topics.get(
            self.target_topic
        )
        if meta is None or meta.error is not None or not meta.partitions:
            consumer.close()
            raise ServiceUnavailable(
                f"topic {self.target_topic} is not available (run `flowledger topics ensure`)",
                code=TOPIC_MISSING,
                topic=self.target_topic,
            )
        self.partitions = len(meta.partitions)
        consumer.subscribe(
            [self.source_topic],
            on_assign=lambda _c, tps: self.assigned({tp.partition for tp in tps}),
            on_revoke=lambda _c, tps: self.revoked({tp.partition for tp in tps}),
            on_lost=lambda _c, tps: self.revoked({tp.partition for tp in tps}),
        )
        self._consumer = consumer

    def assigned(self, partitions: set[int]) -> None:
        self._assigned |= partitions

    def revoked(self, partitions: set[int]) -> None:
        self._assigned -= partitions
        # No longer ours to commit: the next owner copies again from the last commit.
        for p in partitions:
            self._uncommitted.pop(p, None)

    def copies(self, msg: Message) -> list[Outgoing]:
        raise NotImplementedError

    async def run(self, stopped: asyncio.Event) -> None:
        """Copy until `stopped` is set (by the router's loop on its way out)."""
        while not stopped.is_set():
            await self.turn()

    async def turn(self) -> None:
        assert self._consumer is not None
        # A lone record is copied the moment it lands, not after the poll timeout.
        messages = await asyncio.to_thread(
            take,
            self._consumer,
            self.settings.processor.batch_size,
            self.settings.processor.poll_timeout_s,
        )
        batch = [m for m in messages if not m.error()]
        if not batch:
            if self._uncommitted:
                await self._commit()
            if self.watch_end:
                self.caught_up = await asyncio.to_thread(self._at_end)
            return
        self.caught_up = False
        outgoing = [copy for m in batch for copy in self.copies(m)]
        if outgoing:
            await produce_all(
                self._producer,
                outgoing,
                self._retry_producing,
                self.settings.kafka.request_timeout_s,
            )
        for m in batch:
            partition, offset = m.partition(), m.offset()
            assert partition is not None and offset is not None
            self._uncommitted[partition] = offset + 1
        await self._commit()
        self.forwarded += len(batch)

    async def _commit(self) -> None:
        assert self._consumer is not None
        ends = dict(self._uncommitted)
        try:
            await asyncio.to_thread(
                self._consumer.commit,
                offsets=[TopicPartition(self.source_topic, p, o) for p, o in ends.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Copied and acknowledged: sent again with the next turn, records or not
            # (a group whose last commit failed would otherwise show lag for good).
            log.warning("%s commit failed, will retry: %s", self.group, exc)
            return
        for p, o in ends.items():
            if self._uncommitted.get(p) == o:
                del self._uncommitted[p]

    def copy(self, msg: Message, partition: int, key: bytes | None = None) -> Outgoing:
        """``msg`` as written to ``partition`` of the target, under ``key`` (its own
        key unless given), with its coordinates in the source header."""
        topic, at, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and at is not None and offset is not None
        headers: list[Header] = [
            (k, v) for k, v in tracing.pairs(msg.headers()) if k != SOURCE_HEADER
        ]
        headers.append((SOURCE_HEADER, source_header(topic, at, offset)))
        return Outgoing(
            self.target_topic,
            msg.key() if key is None else key,
            msg.value(),
            headers,
            timestamp_ms=msg.timestamp()[1],
            partition=partition,
        )

    def _at_end(self) -> bool:
        assert self._consumer is not None
        owned = sorted(self._assigned)
        if not owned:
            return False
        timeout = self.settings.kafka.request_timeout_s
        topic = self.source_topic
        positions = self._consumer.position([TopicPartition(topic, p) for p in owned])
        # One request of a client of its own: the group consumer would queue each
        # watermark request behind its fetch long-poll.
        if self._admin is None:
            self._admin = clients.admin(self.settings)
        ends = end_offsets(self._admin, [(topic, p) for p in owned], timeout)
        unknown = [TopicPartition(tp.topic, tp.partition) for tp in positions if tp.offset < 0]
        committed = (
            {tp.partition: tp.offset for tp in self._consumer.committed(unknown, timeout=timeout)}
            if unknown
            else {}
        )
        for tp in positions:
            high = ends[(topic, tp.partition)]
            done = tp.offset if tp.offset >= 0 else committed.get(tp.partition, -1)
            if done < 0:
                # Nothing consumed or committed yet: at the end only if the partition
                # holds nothing (an empty source is idle too).
                done, _high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=timeout
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
