"""The projector runner: consumes the runtime, audit and definitions topics and applies
each batch, with its checkpoints, in one database transaction.

Positions come from the database, not from Kafka: on every assignment the consumer is
seeked to the stored checkpoints, and offsets are committed to Kafka only as a courtesy
(for lag dashboards) after the database commit.

Batches are pipelined: while a writer thread runs batch N's transaction, the consume
thread folds batch N+1 on the states N leaves behind. At most one batch is in flight,
and its transaction first checks that the stored checkpoints are where the plan
assumed; if they are not (another instance applied those partitions meanwhile) or the
write fails, the batch is applied afresh in one synchronous transaction that re-reads
everything, and the batch planned behind it is planned again. Rebalance callbacks (which
run inside ``consume``) first finish the batch in flight, so they never see one."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from projections import db, migrate
from projections.apply import (
    DEFAULT_PROJECTION,
    Applier,
    BatchResult,
    Incoming,
    Kind,
    Plan,
    read_checkpoints,
)
from projections.changes import Coordinates
from topics import admin, clients
from topics.catalogue import AUDIT, DEFINITIONS, RUNTIME

log = logging.getLogger(__name__)

POLL_S = 0.2
DB_RETRY_MAX_S = 5.0


def tune_gc() -> None:
    """Collector settings for a process that runs a projector: a batch allocates a few
    hundred thousand objects that all stay alive until its plan is written, while the
    run cache holds many long-lived ones. With the default thresholds the collector
    rescanned both over and over (about a quarter of the projector's time); with a
    young generation of a million net allocations it runs about once a run instead
    of dozens of times. Reference counting frees what a batch allocates; the folds
    make no cycles."""
    gc.freeze()
    gc.set_threshold(1_000_000, 50, 100)


def topic_kinds(settings: Settings) -> dict[str, Kind]:
    return {
        settings.topic(RUNTIME): "runtime",
        settings.topic(AUDIT): "audit",
        settings.topic(DEFINITIONS): "definitions",
    }


@dataclass
class RunStats:
    batches: int = 0
    records: int = 0
    applied: int = 0
    skipped: int = 0
    errors: int = 0
    caught_up: bool = False
    seconds: float = 0.0
    # from the first record read to the last batch applied: the time spent projecting,
    # without the consumer group join before it or the idle polls after it
    busy_seconds: float = 0.0
    _first_read: float | None = None
    _last_applied: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "records": self.records,
            "applied": self.applied,
            "skipped": self.skipped,
            "errors": self.errors,
            "caught_up": self.caught_up,
            "seconds": round(self.seconds, 3),
            "busy_seconds": round(self.busy_seconds, 3),
        }

    def finish(self, started: float) -> None:
        now = time.monotonic()
        self.seconds = now - started
        if self._first_read is None:
            self.busy_seconds = 0.0
        else:
            self.busy_seconds = (self._last_applied or now) - self._first_read


class Projector:
    """One projector instance. Several may run in one consumer group (threads or
    processes); the database checkpoints keep them from doubling anything."""

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str | None = None,
        engine: Engine | None = None,
        projection: str = DEFAULT_PROJECTION,
        batch_size: int | None = None,
        group_id: str | None = None,
        migrate_first: bool = True,
        on_batch: Callable[[BatchResult], None] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.projection = projection
        self.batch_size = batch_size or settings.projector.batch_size
        self.group_id = group_id or settings.projector.group_id
        self._own_engine = engine is None
        self.engine = engine or db.engine(database_url or settings.database_url())
        self._kinds = topic_kinds(settings)
        self._owned: set[tuple[str, int]] = set()
        self._next: dict[tuple[str, int], int] = {}
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: tuple[Plan, Future[None]] | None = None
        self._on_batch = on_batch
        # librdkafka overrides, e.g. a short session.timeout.ms so that the group
        # reassigns a killed instance's partitions sooner
        self._consumer_config = dict(consumer_config or {})
        self._applier = Applier(projection)
        self.stats = RunStats()
        if migrate_first:
            migrate.upgrade(self.engine)

    # -- rebalance callbacks (run inside consume()) ---------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain()
        stored = self._db_retry(lambda: self._read_checkpoints())
        for tp in partitions:
            slot = (tp.topic, tp.partition)
            if slot in stored:
                tp.offset = stored[slot]
                self._next[slot] = stored[slot]
            else:
                tp.offset = OFFSET_BEGINNING
                self._next[slot] = 0
            self._owned.add(slot)
        # Another instance may have applied these partitions since we last held them.
        self._applier.forget((tp.topic, tp.partition) for tp in partitions)
        consumer.incremental_assign(partitions)
        log.info("assigned %s", sorted(self._owned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The batch in flight covers these partitions too: it is finished first.
        self._drain()
        for tp in partitions:
            self._owned.discard((tp.topic, tp.partition))
            self._next.pop((tp.topic, tp.partition), None)
        self._applier.forget((tp.topic, tp.partition) for tp in partitions)
        log.info("revoked %s", [(tp.topic, tp.partition) for tp in partitions])

    def _read_checkpoints(self) -> dict[tuple[str, int], int]:
        with db.read_connection(self.engine) as conn:
            return read_checkpoints(conn, self.projection)

    # -- the loop ----------------------------------------------------------------------

    def _consumer_or_start(self) -> Consumer:
        if self._consumer is None:
            consumer = clients.consumer(
                self.settings,
                self.group_id,
                **{"partition.assignment.strategy": "cooperative-sticky"},
                **self._consumer_config,
            )
            consumer.subscribe(
                sorted(self._kinds),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            self._consumer = consumer
        return self._consumer

    def _db_retry(self, work: Callable[[], Any]) -> Any:
        delay = 0.1
        deadline = time.monotonic() + self.settings.kafka.request_timeout_s
        while True:
            try:
                return work()
            except OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(
                        f"projection database unavailable: {exc.orig}", code="DATABASE_UNAVAILABLE"
                    ) from exc
                log.warning("database busy or unavailable, retrying: %s", exc.orig)
                time.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_S)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                time.sleep(delay)

    def _apply(self, batch: Sequence[Incoming]) -> BatchResult:
        """Apply a batch synchronously, in one transaction that re-reads everything."""

        def work() -> BatchResult:
            with self.engine.begin() as conn:
                return self._applier.apply(conn, batch)

        result: BatchResult = self._db_retry(work)
        self._applier.committed(result)
        self._account(result, len(batch))
        return result

    def _account(self, result: BatchResult, records: int) -> None:
        self._next.update(result.next_offsets)
        self.stats.batches += 1
        self.stats.records += records
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self.stats.errors += result.errors
        self.stats._last_applied = time.monotonic()
        if self._on_batch is not None:
            self._on_batch(result)
        if self._consumer is not None:
            self._courtesy_commit(self._consumer, result)

    # -- the pipeline --------------------------------------------------------------------

    def _plan(self, batch: Sequence[Incoming], after: Plan | None) -> Plan:
        plan: Plan = self._db_retry(
            lambda: self._applier.plan(self.engine, batch, self._next, after)
        )
        return plan

    def _write(self, plan: Plan) -> None:
        # runs on the writer thread
        with self.engine.begin() as conn:
            self._applier.write(conn, plan)

    def _submit(self, batch: Sequence[Incoming]) -> None:
        after = self._inflight[0] if self._inflight is not None else None
        plan = self._plan(batch, after)
        if not self._drain() and after is not None:
            # The plan was folded on states the batch before it did not leave behind.
            plan = self._plan(batch, None)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="projector-writer")
        self._inflight = (plan, self._writer.submit(self._write, plan))

    def _drain(self, redo: bool = True) -> bool:
        """Finish the batch in flight; False when it had to be applied afresh (or, with
        ``redo=False``, was left for the next start to apply)."""
        if self._inflight is None:
            return True
        plan, future = self._inflight
        self._inflight = None
        try:
            future.result()
        except Exception as exc:
            if not redo:
                log.warning("batch in flight not written (%s); it is applied on restart", exc)
                return False
            log.info("pipelined batch not written (%s); applying it afresh", exc)
            self._apply(plan.records)
            return False
        self._applier.written(plan)
        self._account(plan.result, len(plan.records))
        return True

    def _courtesy_commit(self, consumer: Consumer, result: BatchResult) -> None:
        offsets = [
            TopicPartition(topic, p, offset)
            for (topic, p), offset in result.next_offsets.items()
            if (topic, p) in self._owned
        ]
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            # The database holds the truth; a refused commit costs only lag metrics.
            log.debug("courtesy commit refused: %s", exc)

    def poll_once(self, timeout: float = POLL_S) -> int:
        """Consume at most one batch and hand it to the writer (finishing the one before);
        returns the number of records read."""
        consumer = self._consumer_or_start()
        messages = consumer.consume(num_messages=self.batch_size, timeout=timeout)
        if messages and self.stats._first_read is None:
            self.stats._first_read = time.monotonic()
        batch: list[Incoming] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise ServiceUnavailable(f"Kafka consumer failed: {err}", code="KAFKA_FATAL")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            if (topic, partition) not in self._owned:
                continue
            batch.append(
                Incoming(
                    self._kinds[topic],
                    Coordinates(topic, partition, offset),
                    msg.key(),
                    msg.value(),
                )
            )
        if batch:
            self._submit(batch)
        else:
            self._drain()
        return len(messages)

    def caught_up(self) -> bool:
        """Every owned partition has been applied up to its end offset (as of now)."""
        consumer = self._consumer_or_start()
        self._drain()
        if not self._owned:
            return False
        owned = sorted(self._owned)
        if self._admin is None:
            self._admin = clients.admin(self.settings)
        ends = admin.end_offsets(self._admin, owned, self.settings.kafka.request_timeout_s)
        positions = {
            (tp.topic, tp.partition): tp.offset
            for tp in consumer.position([TopicPartition(t, p) for t, p in owned])
        }
        # The consumer's position also steps over transaction markers, which are never
        # delivered and so never reach the checkpoint.
        return all(
            max(self._next.get(slot, 0), positions.get(slot, -1)) >= end
            for slot, end in ends.items()
        )

    def run(self, stop: threading.Event) -> RunStats:
        started = time.monotonic()
        try:
            while not stop.is_set():
                self.poll_once()
        finally:
            self.stats.finish(started)
            self.close()
        return self.stats

    def run_until_idle(self, timeout: float, stop: threading.Event | None = None) -> RunStats:
        """Run until every owned partition is caught up, or ``timeout`` seconds pass
        (``stats.caught_up`` says which)."""
        started = time.monotonic()
        deadline = started + timeout
        try:
            while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
                read = self.poll_once()
                if read == 0 and self.caught_up():
                    self.stats.caught_up = True
                    break
        finally:
            self.stats.finish(started)
            self.close()
        return self.stats

    @property
    def owned(self) -> frozenset[tuple[str, int]]:
        """The partitions this instance holds right now (for status and tests)."""
        return frozenset(self._owned)

    def close(self) -> None:
        self._drain(redo=False)
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.debug("consumer close: %s", exc)
        self._admin = None
        self._owned.clear()
        self._next.clear()
        if self._own_engine:
            self.engine.dispose()
