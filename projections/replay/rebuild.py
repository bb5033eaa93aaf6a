"""Rebuild the projection tables from offset 0 up to a cut, into an empty database
or schema, through the same write path and pipeline the live projector uses."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from confluent_kafka import TopicPartition
from sqlalchemy import Engine, MetaData, text

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from projections import migrate
from projections.apply import Applier, BatchResult
from projections.changes import Coordinates
from projections.checkpoints import read_checkpoints
from projections.codes import REPLAY_READ_STALLED
from projections.pipeline import Pipeline
from projections.projector import topic_kinds
from projections.records import Incoming
from projections.replay.cut import Cut
from projections.run_cache import RunCache
from topics import clients

BATCH = 20_000
# Definitions first, so runs can refer to them; then what the runs did; then audits.
_ORDER = {"definitions": 0, "runtime": 1, "audit": 2, "operators": 3}
Progress = Callable[[int, int], None]


@dataclass
class RebuildStats:
    events: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(rate, 1),
        }


def reset(target: Engine) -> None:
    """Empty the target and create the tables afresh: a rebuild starts from nothing.
    An action ledger the target holds stays: it is no projection, nothing rebuilds it."""
    meta = MetaData()
    meta.reflect(target)
    with target.begin() as conn:
        for table in reversed(meta.sorted_tables):
            if table.name in migrate.KEPT_BY_REBUILD:
                continue
            conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}"'))
    migrate.upgrade(target)


def read_range(
    settings: Settings, topic: str, partition: int, end: int, start: int = 0, batch: int = BATCH
) -> Iterator[list[Incoming]]:
    """Records [start, end) of one partition, in offset order, in batches."""
    if end <= start:
        return
    kind = topic_kinds(settings)[topic]
    consumer = clients.consumer(
        settings, f"flowledger-replay-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
    )
    timeout = settings.kafka.request_timeout_s
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        position = start
        deadline = time.monotonic() + timeout
        while position < end:
            messages = consumer.consume(num_messages=min(batch, end - position), timeout=0.5)
            chunk: list[Incoming] = []
            for msg in messages:
                if msg.error():
                    continue
                offset = msg.offset()
                assert offset is not None
                if offset >= end:
                    position = end
                    break
                position = offset + 1
                chunk.append(
                    Incoming(kind, Coordinates(topic, partition, offset), msg.key(), msg.value())
                )
            if chunk:
                deadline = time.monotonic() + timeout
                yield chunk
            elif time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"{topic}[{partition}] stopped at offset {position} before {end}",
                    code=REPLAY_READ_STALLED,
                    topic=topic,
                    partition=partition,
                )
    finally:
        consumer.close()


def rebuild(
    settings: Settings,
    target: Engine,
    cut: Cut,
    *,
    start: Cut | None = None,
    progress: Progress | None = None,
    fresh: bool = True,
) -> RebuildStats:
    """Apply every record below the cut to `target` (emptied first unless `fresh` is
    False, in which case reading resumes from `start`)."""
    if fresh:
        reset(target)
    kinds = topic_kinds(settings)
    slots = sorted(cut, key=lambda s: (_ORDER[kinds[s[0]]], s))
    begin = start or {}
    total = sum(max(0, cut[s] - begin.get(s, 0)) for s in slots)
    stats = RebuildStats()

    def count(_result: BatchResult, records: int) -> None:
        stats.events += records
        if progress:
            progress(stats.events, total)

    pipeline = Pipeline(
        target,
        # An emptied target holds no run this rebuild has not written: those runs
        # are not looked up (the live projector must, another instance may have).
        Applier(cache=RunCache(complete=fresh)),
        retry_timeout_s=settings.kafka.request_timeout_s,
        on_batch=count,
        thread_name="rebuild-writer",
    )
    with target.connect() as conn:
        pipeline.positions.update(read_checkpoints(conn))
    started = time.monotonic()
    try:
        for topic, partition in slots:
            for chunk in read_range(
                settings,
                topic,
                partition,
                cut[(topic, partition)],
                begin.get((topic, partition), 0),
            ):
                pipeline.submit(chunk)
        pipeline.drain()
    finally:
        pipeline.close()
    stats.seconds = time.monotonic() - started
    return stats
