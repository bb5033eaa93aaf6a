"""Reading a topic (from the beginning, an offset or a time) up to its current end, for
people and audits: bounded by the end offsets taken at the start, never by a quiet
period, and by assignment, so no consumer group is left behind."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from flowledger.errors import InvalidInput, ServiceUnavailable
from flowledger.settings import Settings
from topics import clients
from topics.codes import KAFKA_UNAVAILABLE, TOPIC_MISSING, TOPIC_READ_STALLED
from topics.watermarks import high_watermark


@dataclass(frozen=True)
class ReadRecord:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    timestamp_ms: int
    headers: dict[str, str] = field(default_factory=dict)
    # The bytes as they are on the topic (None for a null key or value), for those
    # that send a record on again (a redrive) or must tell null from empty.
    raw_key: bytes | None = field(default=None, compare=False, repr=False)
    raw_value: bytes | None = field(default=None, compare=False, repr=False)
    raw_headers: tuple[tuple[str, bytes | None], ...] = field(default=(), compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "value": self.value,
            "timestamp_ms": self.timestamp_ms,
            "headers": self.headers,
        }


@dataclass(frozen=True)
class ReadRange:
    """Which records to read: one partition or all; from an offset or a time (the first
    offset at or after it, asked of the broker); up to a time; at most so many."""

    partition: int | None = None
    offset: int | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    max: int | None = None


def _headers(raw: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw or []:
        out[str(name)] = (
            value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
        )
    return out


def _raw_headers(raw: Any) -> tuple[tuple[str, bytes | None], ...]:
    return tuple(
        (str(name), value.encode() if isinstance(value, str) else value)
        for name, value in raw or []
    )


def _record(topic: str, msg: Message) -> ReadRecord:
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    key, value = msg.key(), msg.value()
    return ReadRecord(
        topic,
        partition,
        offset,
        key.decode("utf-8", "replace") if isinstance(key, bytes) else None,
        value.decode("utf-8", "replace") if isinstance(value, bytes) else "",
        msg.timestamp()[1],
        _headers(msg.headers()),
        key if isinstance(key, bytes) else None,
        value if isinstance(value, bytes) else None,
        _raw_headers(msg.headers()),
    )


def _starts(
    consumer: Consumer, topic: str, partitions: list[int], span: ReadRange, timeout: float
) -> dict[int, int]:
    if span.offset is not None:
        return dict.fromkeys(partitions, span.offset)
    if span.from_ms is None:
        return dict.fromkeys(partitions, 0)
    asked = [TopicPartition(topic, p, span.from_ms) for p in partitions]
    try:
        found = consumer.offsets_for_times(asked, timeout=timeout)
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"finding offsets by time in {topic} failed: {exc}", code=KAFKA_UNAVAILABLE
        ) from exc
    # -1: no record at or after that time; the partition is read from its end.
    return {tp.partition: tp.offset for tp in found}


def read_all(settings: Settings, topic: str, limit: int | None = None) -> list[ReadRecord]:
    return read(settings, topic, ReadRange(max=limit or None))


def read(settings: Settings, topic: str, span: ReadRange | None = None) -> list[ReadRecord]:
    """The records of ``topic`` in ``span`` up to the end offsets as of the call, by
    assignment: no group is joined and no offset committed, so nothing is left behind."""
    span = span or ReadRange()
    consumer = clients.consumer(settings, f"flowledger-reader-{uuid.uuid4().hex[:8]}")
    timeout = settings.kafka.request_timeout_s
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise ServiceUnavailable(
                f"topic {topic} is not available",
                code=TOPIC_MISSING,
                retryable=False,
                topic=topic,
            )
        partitions = sorted(info.partitions)
        if span.partition is not None:
            if span.partition not in info.partitions:
                raise InvalidInput(
                    f"{topic} has no partition {span.partition} (it has {len(partitions)})",
                    field="--partition",
                )
            partitions = [span.partition]
        starts = _starts(consumer, topic, partitions, span, timeout)
        ends: dict[int, int] = {}
        for partition in partitions:
            high = high_watermark(consumer, topic, partition, timeout)
            start = starts.get(partition, 0)
            if 0 <= start < high:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        out: list[ReadRecord] = []
        positions = {p: starts[p] for p in ends}
        # A limit on silence, not on the whole read: a large topic takes as long as
        # it takes, and a read that stops short is an error, never a partial answer
        # (a redrive's recovery must see every mark to send each record once).
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                behind = {p: ends[p] - positions[p] for p in ends if positions[p] < ends[p]}
                raise ServiceUnavailable(
                    f"reading {topic} stopped short of its end: {behind} records left",
                    code=TOPIC_READ_STALLED,
                    topic=topic,
                    behind=behind,
                )
            msg = consumer.poll(0.5)
            if msg is None:
                # Transaction markers are never delivered: the position says how far
                # the consumer really is.
                for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                    if tp.offset > positions[tp.partition]:
                        positions[tp.partition] = tp.offset
                        deadline = time.monotonic() + timeout
                continue
            if msg.error():
                continue
            found = _record(topic, msg)
            positions[found.partition] = found.offset + 1
            deadline = time.monotonic() + timeout
            if found.offset >= ends[found.partition]:
                continue
            if span.from_ms is not None and found.timestamp_ms < span.from_ms:
                continue
            if span.to_ms is not None and found.timestamp_ms > span.to_ms:
                continue
            out.append(found)
        out.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
        return out[: span.max] if span.max else out
    finally:
        consumer.close()


def read_json(settings: Settings, topic: str) -> list[tuple[ReadRecord, dict[str, Any]]]:
    """The records of a topic whose value is a JSON object, decoded; others skipped."""
    out = []
    for record in read_all(settings, topic):
        try:
            value = json.loads(record.value)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append((record, value))
    return out
