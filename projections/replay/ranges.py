"""One partition's records in a range of offsets, read in batches and driven through a
rebuild's pipeline: the unit of work of a rebuild, in this process or a helper."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

from confluent_kafka import TopicPartition
from sqlalchemy import Engine

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from projections.apply import Applier
from projections.changes import Coordinates
from projections.checkpoints import read_checkpoints
from projections.codes import REPLAY_READ_STALLED
from projections.pipeline import Pipeline
from projections.projector import topic_kinds
from projections.records import Incoming, Slot
from projections.run_cache import RunCache
from topics import clients

BATCH = 20_000


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


def pipeline_for(
    settings: Settings, target: Engine, *, complete: bool, count: Callable[[int], None]
) -> Pipeline:
    pipeline = Pipeline(
        target,
        # An emptied target holds no run this rebuild has not written: those runs
        # are not looked up (the live projector must, another instance may have).
        Applier(cache=RunCache(complete=complete)),
        retry_timeout_s=settings.kafka.request_timeout_s,
        on_batch=lambda _result, records: count(records),
        thread_name="rebuild-writer",
    )
    with target.connect() as conn:
        pipeline.positions.update(read_checkpoints(conn))
    return pipeline


def apply_range(
    settings: Settings,
    pipeline: Pipeline,
    slot: Slot,
    span: tuple[int, int],
    between: Callable[[], None],
) -> None:
    topic, partition = slot
    first, end = span
    for chunk in read_range(settings, topic, partition, end, first):
        pipeline.submit(chunk)
        between()
