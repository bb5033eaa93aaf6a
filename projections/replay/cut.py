"""A cut: for every partition of the projected topics, the offset a rebuild reads
up to (exclusive). Taken from the live projector's checkpoints, from a time, or
from an explicit spec, so that a rebuild and the live tables cover the same log."""

from __future__ import annotations

from datetime import datetime

from confluent_kafka import TopicPartition
from sqlalchemy import Engine

from flowledger.errors import InvalidInput
from flowledger.settings import Settings
from projections.checkpoints import DEFAULT_PROJECTION, read_checkpoints
from projections.codes import REPLAY_OFFSETS_INVALID
from projections.projector import topic_kinds
from topics import clients

Slot = tuple[str, int]
Cut = dict[Slot, int]


def partitions(settings: Settings) -> list[Slot]:
    consumer = clients.consumer(settings, "flowledger-replay-metadata")
    try:
        metadata = consumer.list_topics(timeout=settings.kafka.request_timeout_s)
    finally:
        consumer.close()
    slots: list[Slot] = []
    for topic in topic_kinds(settings):
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            continue
        slots.extend((topic, p) for p in info.partitions)
    return sorted(slots)


def from_checkpoints(settings: Settings, live: Engine, projection: str = DEFAULT_PROJECTION) -> Cut:
    """Where the live projector stands: every known partition, 0 where it has none."""
    with live.connect() as conn:
        stored = read_checkpoints(conn, projection)
    return {slot: stored.get(slot, 0) for slot in partitions(settings)}


def from_time(settings: Settings, when: datetime) -> Cut:
    """The first offset of each partition at or after `when` (broker timestamps)."""
    consumer = clients.consumer(settings, "flowledger-replay-metadata")
    try:
        slots = partitions(settings)
        millis = int(when.timestamp() * 1000)
        asked = [TopicPartition(t, p, millis) for t, p in slots]
        found = consumer.offsets_for_times(asked, timeout=settings.kafka.request_timeout_s)
        cut: Cut = {}
        for tp in found:
            if tp.offset >= 0:
                cut[(tp.topic, tp.partition)] = tp.offset
            else:
                # Nothing at or after that time: the whole partition is before it.
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=settings.kafka.request_timeout_s
                )
                cut[(tp.topic, tp.partition)] = high
        return cut
    finally:
        consumer.close()


def parse_spec(settings: Settings, spec: str) -> Cut:
    """`topic:partition=offset,...`; a topic may be named by its short name
    (runtime, audit, definitions). Partitions not named are read from 0 to 0."""
    short: dict[str, str] = {str(kind): topic for topic, kind in topic_kinds(settings).items()}
    cut: Cut = dict.fromkeys(partitions(settings), 0)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            where, offset_text = part.split("=", 1)
            topic, partition_text = where.rsplit(":", 1)
            slot = (short.get(topic, topic), int(partition_text))
            offset = int(offset_text)
        except ValueError:
            raise InvalidInput(
                f"cannot read {part!r}: expected topic:partition=offset",
                code=REPLAY_OFFSETS_INVALID,
                field="--offsets",
            ) from None
        if slot not in cut or offset < 0:
            raise InvalidInput(
                f"{part!r} names no partition of the projected topics",
                code=REPLAY_OFFSETS_INVALID,
                field="--offsets",
            )
        cut[slot] = offset
    return cut


def as_json(cut: Cut) -> list[dict[str, object]]:
    return [{"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(cut.items())]
