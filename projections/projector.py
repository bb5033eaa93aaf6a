"""The projector runner: consumes the runtime, audit and definitions topics and applies
each batch, with its checkpoints, in one database transaction, through the pipeline the
rebuild uses too (projections.pipeline).

Positions come from the database, not from Kafka: on every assignment the consumer is
seeked to the stored checkpoints, and offsets are committed to Kafka only as a courtesy
(for lag dashboards) after the database commit. Rebalance callbacks (which run inside
``consume``) first finish the batch in flight, so they never see one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from sqlalchemy import Engine

from flowledger import tracing
from flowledger.errors import ServiceUnavailable
from flowledger.metrics import HealthServer
from flowledger.settings import Settings
from projections import db, migrate
from projections.apply import Applier, BatchResult
from projections.changes import Coordinates
from projections.checkpoints import DEFAULT_PROJECTION, read_checkpoints
from projections.codes import KAFKA_FATAL
from projections.metrics import ProjectorMetrics
from projections.pipeline import Pipeline, retry_database
from projections.records import Incoming, Kind
from topics import admin, clients
from topics.catalogue import AUDIT, DEFINITIONS, OPERATORS, RUNTIME

log = logging.getLogger(__name__)

POLL_S = 0.2
# How often the lag is sampled (from the consumer's cached end offsets).
LAG_EVERY_S = 1.0


def topic_kinds(settings: Settings) -> dict[str, Kind]:
    return {
        settings.topic(RUNTIME): "runtime",
        settings.topic(AUDIT): "audit",
        settings.topic(DEFINITIONS): "definitions",
        settings.topic(OPERATORS): "operators",
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
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None
        self._on_batch = on_batch
        # librdkafka overrides, e.g. a short session.timeout.ms so that the group
        # reassigns a killed instance's partitions sooner
        self._consumer_config = dict(consumer_config or {})
        self._pipeline = Pipeline(
            self.engine,
            Applier(projection),
            retry_timeout_s=settings.kafka.request_timeout_s,
            on_batch=self._account,
            thread_name="projector-writer",
            tracer=tracing.tracer(settings.tracing),
        )
        # the next offset applied, per owned partition
        self._next = self._pipeline.positions
        self.stats = RunStats()
        self.metrics = ProjectorMetrics()
        self._server: HealthServer | None = None
        self._lag_at = 0.0
        # Every owned partition applied up to its end once since the last assignment.
        self._caught_up_once = False
        if migrate_first:
            migrate.upgrade(self.engine)

    # -- rebalance callbacks (run inside consume()) ---------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._pipeline.drain()
        stored = retry_database(self._read_checkpoints, self.settings.kafka.request_timeout_s)
        for tp in partitions:
            slot = (tp.topic, tp.partition)
            if slot in stored:
                tp.offset = stored[slot]
                self._next[slot] = stored[slot]
            else:
                tp.offset = OFFSET_BEGINNING
                self._next[slot] = 0
            self._owned.add(slot)
        self._caught_up_once = False
        self._lag_at = 0.0
        # Another instance may have applied these partitions since we last held them.
        self._pipeline.applier.forget((tp.topic, tp.partition) for tp in partitions)
        consumer.incremental_assign(partitions)
        log.info("assigned %s", sorted(self._owned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The batch in flight covers these partitions too: it is finished first.
        self._pipeline.drain()
        for tp in partitions:
            self._owned.discard((tp.topic, tp.partition))
            self._next.pop((tp.topic, tp.partition), None)
        self._pipeline.applier.forget((tp.topic, tp.partition) for tp in partitions)
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

    def _account(self, result: BatchResult, records: int) -> None:
        self.stats.batches += 1
        self.stats.records += records
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self.stats.errors += result.errors
        self.stats._last_applied = time.monotonic()
        self.metrics.batch_done(result)
        if self._on_batch is not None:
            self._on_batch(result)
        if self._consumer is not None:
            self._courtesy_commit(self._consumer, result)

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
                    raise ServiceUnavailable(f"Kafka consumer failed: {err}", code=KAFKA_FATAL)
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
                    tracing.header(msg.headers()),
                )
            )
        if batch:
            self._pipeline.submit(batch)
        else:
            self._pipeline.drain()
        self._sample_lag(consumer)
        return len(messages)

    # -- metrics and health --------------------------------------------------------

    @property
    def metrics_url(self) -> str | None:
        """Where /metrics is served (None until `run` starts it, or when it is off)."""
        return self._server.url if self._server is not None else None

    def readiness(self) -> dict[str, bool]:
        return {
            "connected": self._consumer is not None,
            "partitions_assigned": bool(self._owned),
            "caught_up": self._caught_up_once,
        }

    def serve(self) -> str | None:
        """Start /metrics, /healthz and /readyz (unless metrics are turned off)."""
        if not self.settings.metrics.enabled or self._server is not None:
            return self.metrics_url
        server = HealthServer(
            "projector",
            self.metrics.registry,
            self.readiness,
            host=self.settings.metrics.host,
            port=self.settings.metrics.port,
        )
        url = server.start()
        self._server = server  # only once it listens: metrics_url is read from threads
        return url

    def _sample_lag(self, consumer: Consumer) -> None:
        """Per owned partition, the records not yet applied: the end offset as of the
        last fetch (no broker call) minus the next offset to apply."""
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S or not self._owned:
            return
        self._lag_at = now
        try:
            self._measure_lag(consumer)
        except KafkaException as exc:
            # Only the gauge waits for the next sample; the records do not.
            log.debug("lag not measured: %s", exc)

    def _measure_lag(self, consumer: Consumer) -> None:
        owned = sorted(self._owned)
        positions = {
            (tp.topic, tp.partition): tp.offset
            for tp in consumer.position([TopicPartition(t, p) for t, p in owned])
        }
        lags: dict[tuple[str, int], int] = {}
        for topic, partition in owned:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            # The position also steps over transaction markers (see caught_up).
            done = max(self._next.get((topic, partition), 0), positions.get((topic, partition), -1))
            # No end offset cached: nothing came from the partition since it was
            # assigned, which the consumer would have fetched if it were there.
            lags[(topic, partition)] = max(0, high - done) if high >= 0 else 0
        self.metrics.set_lag(lags)
        # A cached end offset is never past the broker's, so while it shows records
        # pending the answer is no. Asking anyway drained the pipeline and waited on
        # the broker once a second through a whole catch-up (a quarter to half of it).
        if not self._caught_up_once and not any(lags.values()):
            # Asked of the broker, once a second, only until it first holds.
            try:
                self._caught_up_once = self.caught_up()
            except (KafkaException, ServiceUnavailable) as exc:
                log.debug("end offsets unavailable: %s", exc)

    def caught_up(self) -> bool:
        """Every owned partition has been applied up to its end offset (as of now)."""
        consumer = self._consumer_or_start()
        self._pipeline.drain()
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
        self.serve()
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
        self.serve()
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
        if self._server is not None:
            self._server.close()
            self._server = None
        self._pipeline.close()
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
