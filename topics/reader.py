"""Reading a topic from the beginning up to its current end, for people and audits:
bounded by the end offsets taken at the start, never by a quiet period."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from topics import clients
from topics.codes import TOPIC_MISSING
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


def _headers(raw: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw or []:
        out[str(name)] = (
            value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
        )
    return out


def read_all(settings: Settings, topic: str, limit: int | None = None) -> list[ReadRecord]:
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
        ends: dict[int, int] = {}
        for partition in info.partitions:
            high = high_watermark(consumer, topic, partition, timeout)
            if high > 0:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[ReadRecord] = []
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            positions[partition] = offset + 1
            if offset >= ends[partition]:
                continue
            key = msg.key()
            value = msg.value() or b""
            out.append(
                ReadRecord(
                    topic,
                    partition,
                    offset,
                    key.decode("utf-8", "replace") if isinstance(key, bytes) else None,
                    value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value),
                    msg.timestamp()[1],
                    _headers(msg.headers()),
                )
            )
        out.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
        return out[:limit] if limit else out
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
