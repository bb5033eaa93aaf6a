"""Where the routing-state snapshots live: the compacted internal topic
flowledger.internal.processor-snapshots.v1, two slots per consumer group (A and B).
A snapshot is written into the slot that does not hold the newest complete one, chunks
first and its manifest last, so a writer that dies half-way leaves the other slot
whole; a reader takes the newest slot whose manifest and chunks agree."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from processors import snapshot
from processors.snapshot import FollowerState
from topics import clients
from topics.catalogue import SNAPSHOTS
from topics.codes import KAFKA_UNAVAILABLE, TOPIC_MISSING
from topics.watermarks import high_watermark

log = logging.getLogger(__name__)

SLOTS = ("A", "B")
SNAPSHOT_HEADER = "flowledger-snapshot-id"


@dataclass(frozen=True)
class Loaded:
    state: FollowerState
    slot: str
    manifest: dict[str, Any]
    # Bytes read from the topic to find it (every slot's records, compaction pending).
    bytes_read: int


class SnapshotStore:
    """One group's snapshots; with `partition`, those of one routing partition's state
    (partitioned routing), all written to and read from that partition of the topic."""

    def __init__(self, settings: Settings, partition: int | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic(SNAPSHOTS)
        group = settings.processor.group_id
        self.group = group if partition is None else f"{group}/routing-{partition}"
        self.partition = partition
        self.horizon = settings.processor.dedup_horizon
        self._partitions = 1
        # Chunks each slot holds now, so a smaller snapshot removes the extra ones.
        self._chunk_counts: dict[str, int] = {}
        self._last_slot: str | None = None
        self._producer: Any = None

    def _key(self, slot: str, part: str) -> str:
        return f"{self.group}:{slot}:{part}"

    def load(self) -> Loaded | None:
        """The newest complete snapshot of this group, or None (none yet, or none
        readable: the follower then folds the topics from their beginning)."""
        timeout = self.settings.kafka.request_timeout_s
        consumer = clients.consumer(self.settings, f"{self.group}-snapshots-{uuid.uuid4().hex[:8]}")
        try:
            meta = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise ServiceUnavailable(
                    f"topic {self.topic} is not available (run `flowledger topics ensure`)",
                    code=TOPIC_MISSING,
                    topic=self.topic,
                )
            self._partitions = len(meta.partitions)
            readable = meta.partitions if self.partition is None else [self._home()]
            ends = {p: high_watermark(consumer, self.topic, p, timeout) for p in readable}
            latest, read = self._read(consumer, ends)
        finally:
            consumer.close()
        found: list[Loaded] = []
        for slot in SLOTS:
            raw = latest.get(self._key(slot, "manifest"))
            if raw is None:
                continue
            manifest = json.loads(raw[0])
            count = int(manifest.get("chunks", 0))
            self._chunk_counts[slot] = max(
                count,
                sum(1 for k in latest if k.startswith(self._key(slot, "")) and k[-1].isdigit()),
            )
            chunks = [latest.get(self._key(slot, str(i))) for i in range(count)]
            if any(c is None or c[1] != manifest.get("snapshot_id") for c in chunks):
                log.warning("snapshot slot %s is incomplete; not used", slot)
                continue
            try:
                state = snapshot.decode((c[0] for c in chunks if c is not None), self.horizon)
            except snapshot.SnapshotUnreadable as exc:
                log.warning("snapshot slot %s unreadable (%s); not used", slot, exc)
                continue
            found.append(Loaded(state, slot, manifest, read))
        if not found:
            return None
        best = max(found, key=lambda f: str(f.manifest.get("taken_at", "")))
        self._last_slot = best.slot
        return best

    def _read(
        self, consumer: Any, ends: dict[int, int]
    ) -> tuple[dict[str, tuple[bytes, str | None]], int]:
        prefix = f"{self.group}:".encode()
        latest: dict[str, tuple[bytes, str | None]] = {}
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in todo])
        read = 0
        quiet_since = time.monotonic()
        while todo:
            # Short polls: `consume(n, t)` waits out `t` unless n records come, and a
            # snapshot is a handful of big records.
            messages = consumer.consume(500, timeout=0.05)
            if messages:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > self.settings.kafka.request_timeout_s * 3:
                raise ServiceUnavailable(
                    f"reading {self.topic} stalled before its end", code=KAFKA_UNAVAILABLE
                )
            for msg in messages:
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.debug("snapshot read: %s", msg.error())
                    continue
                partition, offset = msg.partition(), msg.offset()
                key, value = msg.key() or b"", msg.value()
                if key.startswith(prefix):
                    name = key.decode("utf-8", "replace")
                    if value is None:
                        latest.pop(name, None)
                    else:
                        read += len(value)
                        headers = dict(msg.headers() or [])
                        ident = headers.get(SNAPSHOT_HEADER)
                        latest[name] = (
                            value,
                            ident.decode() if isinstance(ident, bytes) else None,
                        )
                if offset is not None and offset + 1 >= ends[partition]:
                    todo.discard(partition)
        return latest, read

    def save(self, state: FollowerState) -> dict[str, Any]:
        """Write a snapshot into the other slot; blocks until Kafka acknowledged all of
        it (run it in a thread). Returns its manifest."""
        slot = "B" if self._last_slot == "A" else "A"
        snapshot_id = uuid.uuid4().hex
        encoded = snapshot.encode(state, snapshot_id, datetime.now(UTC))
        if self._producer is None:
            self._producer = clients.producer(
                self.settings, **{"linger.ms": 20, "compression.type": "none"}
            )
        records: list[tuple[str, bytes | None, int]] = [
            (self._key(slot, str(i)), chunk, self._chunk_partition(i))
            for i, chunk in enumerate(encoded.chunks)
        ]
        # Chunks an earlier, bigger snapshot left in this slot: removed.
        records += [
            (self._key(slot, str(i)), None, self._chunk_partition(i))
            for i in range(len(encoded.chunks), self._chunk_counts.get(slot, 0))
        ]
        self._send(records, snapshot_id)
        manifest = json.dumps(encoded.manifest).encode()
        self._send([(self._key(slot, "manifest"), manifest, self._chunk_partition(0))], snapshot_id)
        self._chunk_counts[slot] = len(encoded.chunks)
        self._last_slot = slot
        return encoded.manifest

    def _home(self) -> int:
        assert self.partition is not None
        return self.partition % self._partitions

    def _chunk_partition(self, i: int) -> int:
        return i % self._partitions if self.partition is None else self._home()

    def _send(self, records: list[tuple[str, bytes | None, int]], snapshot_id: str) -> None:
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        for key, value, partition in records:
            self._producer.produce(
                self.topic,
                key=key.encode(),
                value=value,
                partition=partition,
                headers=[(SNAPSHOT_HEADER, snapshot_id.encode())],
                on_delivery=on_delivery,
            )
            self._producer.poll(0)
        left = self._producer.flush(self.settings.kafka.request_timeout_s * 4)
        if left or failures:
            raise ServiceUnavailable(
                f"snapshot not acknowledged: {failures[:3] or f'{left} records left'}",
                code=KAFKA_UNAVAILABLE,
            )

    def close(self) -> None:
        # The producer is kept: a snapshot being written in the background when its
        # partition is revoked finishes (a whole, older fold; the new owner's is newer).
        if self._producer is not None:
            self._producer.flush(self.settings.kafka.request_timeout_s)
