"""How far the projection is behind the log: stored checkpoints against the topics' end
offsets. Read-your-writes for scripts and tests (``wait_caught_up``).

A partition whose last records are transaction markers (transactional producers) has an
end offset one past the last delivered record; such a partition reads as lagging by the
markers until the next record arrives."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException
from sqlalchemy import Engine

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from projections import db
from projections.checkpoints import DEFAULT_PROJECTION, read_checkpoints
from projections.projector import topic_kinds
from projections.records import Slot
from topics import admin, clients
from topics.codes import KAFKA_UNAVAILABLE, TOPIC_MISSING


def end_offsets(settings: Settings) -> dict[Slot, int]:
    """The end offset of every partition of the projected topics, now."""
    timeout = settings.kafka.request_timeout_s
    client = clients.admin(settings)
    try:
        metadata = client.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise ServiceUnavailable(f"Kafka did not answer: {exc}", code=KAFKA_UNAVAILABLE) from exc
    slots: list[Slot] = []
    for topic in sorted(topic_kinds(settings)):
        meta = metadata.get(topic)
        if meta is None or meta.error is not None:
            raise ServiceUnavailable(f"topic {topic} is not available", code=TOPIC_MISSING)
        slots.extend((topic, partition) for partition in sorted(meta.partitions))
    return dict(sorted(admin.end_offsets(client, slots, timeout).items()))


def _rows(ends: dict[Slot, int], stored: dict[Slot, int]) -> list[dict[str, Any]]:
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


def _stored(engine: Engine, projection: str) -> dict[Slot, int]:
    with db.read_connection(engine) as conn:
        return read_checkpoints(conn, projection)


def lag(
    settings: Settings, engine: Engine, projection: str = DEFAULT_PROJECTION
) -> list[dict[str, Any]]:
    """Per partition: the checkpoint, the end offset now, and the records between."""
    return _rows(end_offsets(settings), _stored(engine, projection))


def wait(
    settings: Settings,
    engine: Engine,
    timeout: float,
    projection: str = DEFAULT_PROJECTION,
    interval: float = 0.2,
) -> tuple[bool, list[dict[str, Any]]]:
    """Wait until every checkpoint reaches the end offsets as of the call; whether it
    did within ``timeout`` seconds, and the lag against those offsets at the end."""
    ends = end_offsets(settings)
    deadline = time.monotonic() + timeout
    while True:
        stored = _stored(engine, projection)
        if all(stored.get(slot, 0) >= end for slot, end in ends.items()):
            return True, _rows(ends, stored)
        if time.monotonic() >= deadline:
            return False, _rows(ends, stored)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def wait_caught_up(
    settings: Settings,
    engine: Engine,
    timeout: float,
    projection: str = DEFAULT_PROJECTION,
    interval: float = 0.2,
) -> bool:
    """True once every checkpoint reaches the end offsets as of the call."""
    return wait(settings, engine, timeout, projection, interval)[0]
