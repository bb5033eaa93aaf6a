"""How far the projection is behind the log: stored checkpoints against the topics' end
offsets. Read-your-writes for scripts and tests (``wait_caught_up``).

A partition whose last records are transaction markers (transactional producers) has an
end offset one past the last delivered record; such a partition reads as lagging by the
markers until the next record arrives."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import TopicPartition
from sqlalchemy import Engine

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from projections.apply import DEFAULT_PROJECTION, read_checkpoints
from projections.projector import topic_kinds
from topics import clients


def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of the projected topics, now."""
    timeout = settings.kafka.request_timeout_s
    consumer = clients.consumer(settings, f"flowledger-lag-{uuid.uuid4().hex[:8]}")
    try:
        out: dict[tuple[str, int], int] = {}
        for topic in sorted(topic_kinds(settings)):
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if meta is None or meta.error is not None:
                raise ServiceUnavailable(f"topic {topic} is not available", code="TOPIC_MISSING")
            for partition in sorted(meta.partitions):
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout, cached=False
                )
                out[(topic, partition)] = high
        return out
    finally:
        consumer.close()


def lag(
    settings: Settings, engine: Engine, projection: str = DEFAULT_PROJECTION
) -> list[dict[str, Any]]:
    ends = end_offsets(settings)
    with engine.connect() as conn:
        stored = read_checkpoints(conn, projection)
    return [
        {
            "topic": topic,
            "partition": partition,
            "next_offset": stored.get((topic, partition), 0),
            "end_offset": end,
            "lag": max(0, end - stored.get((topic, partition), 0)),
        }
        for (topic, partition), end in sorted(ends.items())
    ]


def wait_caught_up(
    settings: Settings,
    engine: Engine,
    timeout: float,
    projection: str = DEFAULT_PROJECTION,
    interval: float = 0.2,
) -> bool:
    """True once every checkpoint reaches the end offsets as of the call."""
    ends = end_offsets(settings)
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            stored = read_checkpoints(conn, projection)
        if all(stored.get(slot, 0) >= end for slot, end in ends.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
