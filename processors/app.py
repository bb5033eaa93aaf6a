"""The ingress processor's loop: consume flowledger.events.v1 in a consumer group,
decide each record's plan, hand its effects to `deliveries`, and commit what the
offset window (`offsets`) says is fully done. Held early events are `held`'s.

Built on confluent-kafka (see docs/decisions.md on faust-streaming). One asyncio
loop; `consume` runs in a worker thread. Up to `max_batches_in_flight` batches have
their effects in flight at once (each workflow's signals still in partition order, see
effects.Lanes), so a slow signal does not stop the next records from being taken; an
offset moves only past batches that are completely done. Rebalance callbacks run inside
`consume`: a revoke first lets the batches in flight finish, then commits."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from temporalio.client import Client

from flowledger import tracing
from flowledger.errors import ConfigError, FlowledgerError
from flowledger.metrics import HealthServer
from flowledger.settings import Settings
from processors import audit as audits
from processors import deadletter
from processors.correlation import load_paths
from processors.deliveries import Deliveries
from processors.effects import Backoff, Stopped
from processors.follower import LogFollower
from processors.forwarder import Forwarder
from processors.held import Holding
from processors.metrics import ProcessorMetrics
from processors.offsets import OffsetWindow
from processors.partitioned_follower import PartitionedFollower
from processors.pipeline import IngressRecord, Plan, decide, utc_from_ms
from processors.repartition import Repartitioner, member_consumer
from processors.router_index import OpenWait
from processors.routing_key import SOURCE_HEADER, parse_source
from processors.snapshot import FollowerState
from processors.snapshot_store import SnapshotStore
from processors.stats import Stats
from processors.waits_relay import WaitsRelay
from topics import clients
from topics.catalogue import AUDIT, DEADLETTER, EVENTS, ROUTING
from topics.codes import TOPICS_NOT_COPARTITIONED
from topics.consuming import take
from topics.producing import NotAcknowledged, Outgoing, produce_all
from topics.watermarks import high_watermark
from workflows.client import connect

log = logging.getLogger(__name__)

ClientFactory = Callable[[Settings], Awaitable[Client]]
# How often the ingress lag is sampled (from the consumer's cached end offsets).
LAG_EVERY_S = 1.0

__all__ = ["Processor", "Stats", "run"]


@dataclass
class _Seen:
    """Completed events plus those of the batches in flight, so a second copy of an
    event in flight is a duplicate too (its offset is committed only after the first
    copy's batch is done)."""

    completed: Container[str]
    batch: set[str] = field(default_factory=set)

    def __contains__(self, key: object) -> bool:
        return key in self.completed or key in self.batch


class Processor:
    def __init__(
        self,
        settings: Settings,
        stop: threading.Event | None = None,
        client_factory: ClientFactory = connect,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.client_factory = client_factory
        self.paths = load_paths(settings.correlation.paths, settings.correlation.paths_file)
        p = settings.processor
        self.skew = timedelta(seconds=p.clock_skew_tolerance_s)
        self.window = timedelta(seconds=p.early_event_window_s)
        # Partitioned routing: the forwarder consumes the ingress topic and this loop
        # consumes the routing topic, in a group of its own (processors/forwarder.py);
        # the relay re-keys the runtime topic's wait records for the followers
        # (processors/waits_relay.py), in a third.
        self.partitioned = p.partitioned
        self.events_topic = settings.topic(ROUTING if self.partitioned else EVENTS)
        self.group_id = p.routing_group_id if self.partitioned else p.group_id
        self.audit_topic = settings.topic(AUDIT)
        self.deadletter_topic = settings.topic(DEADLETTER)
        self.backoff = Backoff(settings, self.stop)
        self.follower = PartitionedFollower(settings) if self.partitioned else LogFollower(settings)
        self.repartitioners: list[Repartitioner] = (
            [Forwarder(settings, self.paths, self.backoff), WaitsRelay(settings, self.backoff)]
            if self.partitioned
            else []
        )
        self._repartitioning: list[asyncio.Task[None]] = []
        self._forward_stop = asyncio.Event()
        self.holding = Holding(self.skew, self.window)
        self.stats = Stats()
        self.metrics = ProcessorMetrics()
        self.metrics.held.set_function(lambda: self.holding.early.count)
        self.metrics.open_waits.set_function(lambda: self.follower.counts()["open_waits"])
        self.deliveries = Deliveries(settings, self.backoff, self.stats, self.metrics)
        self._server: HealthServer | None = None
        # Set once start-up is done: Temporal connected, the routing index caught up
        # with the runtime topic, the consumer subscribed.
        self._opened = False
        self._lag_at = 0.0
        # Per owned partition, the committed offset at assignment, until a record shows
        # where the consumer is.
        self._start_offsets: dict[int, int] = {}
        self._consumer: Consumer | None = None
        self._producer = clients.producer(settings)
        self._acks = audits.Acknowledger(self._producer)
        # Batches in consumption order; offsets move only past a done prefix of them.
        self.offsets: OffsetWindow[asyncio.Task[None]] = OffsetWindow()
        self._assigned: set[int] = set()
        self._started = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_took = 0
        self._probe: Consumer | None = None
        # Waits already open that held events restored on an assignment may go to.
        self._reoffer: list[OpenWait] = []
        # The snapshot being written in the background, and when the last one started.
        self._snapshotting: asyncio.Task[None] | None = None
        self._snapshot_at = time.monotonic()

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        began = time.monotonic()
        self.deliveries.client = await self.backoff.retry(
            "connecting to Temporal",
            lambda: self.client_factory(self.settings),
            on=(FlowledgerError,),
        )
        connected_ms = int((time.monotonic() - began) * 1000)
        await self.backoff.retry(
            "reading the runtime topic from Kafka",
            lambda: asyncio.to_thread(self.follower.start),
            on=(FlowledgerError, KafkaException),
        )
        followed_ms = int((time.monotonic() - began) * 1000) - connected_ms
        await asyncio.to_thread(self.follower.catch_up, self.stop.is_set)
        self.follower.prune(datetime.now(UTC))
        # The restored state lives as long as the process: keep the cyclic collector
        # from scanning it again on every full collection.
        gc.freeze()
        self.stats.startup = dict(self.follower.startup)
        self.stats.startup["temporal_connect_ms"] = connected_ms
        self.stats.startup["follower_start_ms"] = followed_ms
        self.stats.startup["open_waits"] = self.follower.counts()["open_waits"]
        self._snapshot_at = time.monotonic()
        for stage in self.repartitioners:
            await self.backoff.retry(
                f"opening the {stage.group} stage",
                partial(asyncio.to_thread, stage.open),
                on=(FlowledgerError, KafkaException),
            )
        if isinstance(self.follower, PartitionedFollower):
            counts = {stage.target_topic: stage.partitions for stage in self.repartitioners}
            if len(set(counts.values())) != 1:
                raise ConfigError(
                    f"the internal topics must have as many partitions each: {counts}",
                    code=TOPICS_NOT_COPARTITIONED,
                    topics=counts,
                )
            self.follower.partitions = self.repartitioners[0].partitions
        self._repartitioning = [
            asyncio.create_task(stage.run(self._forward_stop)) for stage in self.repartitioners
        ]
        consumer = member_consumer(self.settings, self.group_id)
        consumer.subscribe(
            [self.events_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._consumer = consumer
        self._opened = True

    # -- metrics and health --------------------------------------------------

    @property
    def metrics_url(self) -> str | None:
        """Where /metrics is served (None until `run` starts it, or when it is off)."""
        return self._server.url if self._server is not None else None

    def readiness(self) -> dict[str, bool]:
        return {
            "connected": self.deliveries.client is not None,
            # The routing index rebuilt from the runtime topic up to its end at start.
            "caught_up": self._opened,
            "partitions_assigned": bool(self._assigned),
            "running": not self.stop.is_set(),
        }

    def _serve(self) -> None:
        if not self.settings.metrics.enabled:
            return
        server = HealthServer(
            "processor",
            self.metrics.registry,
            self.readiness,
            host=self.settings.metrics.host,
            port=self.settings.metrics.port,
        )
        server.start()
        self._server = server  # only once it listens: metrics_url is read from threads

    async def _sample_lag(self) -> None:
        """Per owned partition, the records not yet handled: the end offset as of the
        last fetch (no broker call) minus the offset after the last handled record
        (before the first one, the group's committed offset, asked once)."""
        now = time.monotonic()
        if self._consumer is None or now - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = now
        try:
            await self._measure_lag()
        except KafkaException as exc:
            # Only the gauge waits for the next sample; the records do not.
            log.debug("lag not measured: %s", exc)

    async def _measure_lag(self) -> None:
        assert self._consumer is not None
        lags: dict[int, int] = {}
        owned = sorted(self._assigned)
        positions = {
            tp.partition: tp.offset
            for tp in self._consumer.position([TopicPartition(self.events_topic, p) for p in owned])
        }
        ends: dict[int, int] = {}
        for p in owned:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.events_topic, p), cached=True
            )
            if high < 0:
                # No end offset cached: nothing came from the partition since it was
                # assigned, which the consumer would have fetched if it were there.
                lags[p] = 0
            else:
                ends[p] = high
        done = {p: self.offsets.next.get(p, positions.get(p, -1)) for p in ends}
        unknown = [p for p, d in done.items() if d < 0 and p not in self._start_offsets]
        if unknown:
            # One request for all of them: asked one by one, the round trips add up
            # while the loop takes no record (the first sample after an assignment).
            self._start_offsets.update(await asyncio.to_thread(self._committed_offsets, unknown))
        for p, high in ends.items():
            if done[p] < 0:
                done[p] = self._start_offsets.get(p, 0)
            lags[p] = max(0, high - done[p])
        self.metrics.set_lag(lags)

    def close(self) -> None:
        if self._opened and self._writes_snapshots():
            try:
                self._save_snapshot()
            except FlowledgerError as exc:
                # The next start reads a longer tail after the previous snapshot.
                log.warning("final snapshot not written: %s", exc)
        if self._consumer is not None:
            try:
                self._commit()
            except KafkaException as exc:
                log.warning("final commit failed: %s", exc)
            self._consumer.close()
            self._consumer = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self.follower.close()
        for stage in self.repartitioners:
            stage.close()
        self._acks.close()
        self._producer.flush(self.settings.kafka.request_timeout_s)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = {tp.partition for tp in partitions}
        if isinstance(self.follower, PartitionedFollower):
            self._adopt(self.follower, owned)
            return
        self._assigned.update(owned)
        # Offered on the next step (this runs inside `consume`, off the loop).
        self._reoffer.extend(
            self.holding.restore(
                self.follower.pending_held,
                self.events_topic,
                owned,
                datetime.now(UTC),
                self.follower.index,
            )
        )

    def _adopt(self, follower: PartitionedFollower, owned: set[int]) -> None:
        """Partitioned routing: the new partitions' state (snapshot and tail), then
        their held events; the waits that opened meanwhile are offered them."""
        opened = follower.adopt(owned, self.stop.is_set)
        self._assigned.update(owned)
        now = datetime.now(UTC)
        for p in sorted(owned):
            state = follower.parts[p]
            self._reoffer.extend(
                self.holding.restore(
                    state.pending_held,
                    self.events_topic,
                    {p},
                    now,
                    state.index,
                    routing_partition=p,
                )
            )
        self._reoffer.extend(opened)
        self.stats.startup |= follower.startup | follower.counts()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        loop = self._loop
        if self.offsets and loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                # Called inside `consume`, off the loop: let the batches in flight
                # finish, so the commit covers them and the next owner redoes nothing.
                asyncio.run_coroutine_threadsafe(self._drain(), loop).result()
        try:
            self._commit(only=gone)
        except KafkaException as exc:
            # The next owner starts from the older commit; the audit makes it skip
            # what was finished here.
            log.warning("commit on revoke failed: %s", exc)
        self._forget(gone)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget({tp.partition for tp in partitions})

    def _forget(self, partitions: set[int]) -> None:
        self.holding.drop_partitions(partitions)
        if isinstance(self.follower, PartitionedFollower):
            self.follower.drop(partitions)
        self._assigned -= partitions
        for p in partitions:
            self._start_offsets.pop(p, None)
        self.offsets.forget(partitions)

    # -- the loop ------------------------------------------------------------

    async def run(self, until_idle: bool = False, timeout: float | None = None) -> Stats:
        started = self._started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._serve()
        try:
            if until_idle:
                for stage in self.repartitioners:
                    stage.watch_end = True
            await self.open()
            if until_idle:
                await asyncio.to_thread(self._open_probe)
            self.stats.ready_seconds = time.monotonic() - started
            while not self.stop.is_set():
                await self.step()
                if until_idle and self.idle():
                    self.stats.caught_up = True
                    self.stats.caught_up_seconds = time.monotonic() - started
                    break
                if timeout is not None and time.monotonic() - started > timeout:
                    break
        except Stopped:
            log.info("stop requested: finishing the batches in flight")
        finally:
            await self._drain()
            if self._repartitioning:
                self._forward_stop.set()
                await asyncio.wait(self._repartitioning)
            if self._snapshotting is not None:
                await asyncio.wait([self._snapshotting])
            self.close()
            if self._server is not None:
                self._server.close()
            self.stats.seconds = time.monotonic() - started
        return self.stats

    async def step(self) -> None:
        assert self._consumer is not None
        for stage in self._repartitioning:
            if stage.done():
                failed = stage.exception()
                raise failed if failed is not None else Stopped()
        poll_s = self.settings.processor.poll_timeout_s
        opened = await asyncio.to_thread(self.follower.poll, poll_s if not self._assigned else 0)
        for index in self.follower.indexes():
            if index.taken:
                self.holding.settle(index)
        if self._reoffer:
            opened, self._reoffer = [*self._reoffer, *opened], []
        await self._release(opened)
        await self._expire()
        messages = await asyncio.to_thread(self._take, poll_s)
        batch = [m for m in messages if not m.error()]
        self._last_took = len(batch)
        for m in messages:
            if m.error():
                log.debug("consume: %s", m.error())
        if batch:
            if not self.stats.first_record_seconds:
                self.stats.first_record_seconds = time.monotonic() - self._started
            self._launch(batch)
        if len(self.offsets) >= self.settings.processor.max_batches_in_flight:
            # The window is full: wait for the oldest batch before taking more.
            await asyncio.wait([self.offsets.oldest])
        self._settle()
        self._commit_retrying()
        await self._sample_lag()
        self._snapshot_when_due()

    # -- snapshots -----------------------------------------------------------

    def _writes_snapshots(self) -> bool:
        """Replicated: one instance of the group writes them, the owner of ingress
        partition 0 (every instance folds the same topics, so its state is everyone's).
        Partitioned: each instance writes those of the partitions it owns."""
        if self.partitioned:
            return bool(self._assigned)
        return 0 in self._assigned

    def _snapshot_copies(self) -> list[tuple[SnapshotStore, FollowerState]]:
        if isinstance(self.follower, PartitionedFollower):
            return self.follower.copies()
        return [(self.follower.snapshots, self.follower.state())]

    @staticmethod
    def _save_all(copies: list[tuple[SnapshotStore, FollowerState]]) -> None:
        for store, state in copies:
            store.save(state)

    def _snapshot_when_due(self) -> None:
        interval = self.settings.processor.snapshot_interval_s
        if self._snapshotting is not None and self._snapshotting.done():
            failed = self._snapshotting.exception()
            if failed is not None:
                log.warning("snapshot not written: %s", failed)
            else:
                self.stats.snapshots += 1
            self._snapshotting = None
        now = time.monotonic()
        if (
            interval <= 0
            or self._snapshotting is not None
            or now - self._snapshot_at < interval
            or not self._writes_snapshots()
        ):
            return
        self._snapshot_at = now
        self.follower.prune(datetime.now(UTC))
        # Copied here, between two polls of the follower, so it matches its offsets;
        # encoded and written off the loop.
        copies = self._snapshot_copies()
        self._snapshotting = asyncio.create_task(asyncio.to_thread(self._save_all, copies))

    def _save_snapshot(self) -> None:
        self.follower.prune(datetime.now(UTC))
        self._save_all(self._snapshot_copies())
        self.stats.snapshots += 1

    def _launch(self, batch: list[Message]) -> None:
        plans, todo = self._decide(batch)
        ends = {plan.record.at[0]: plan.record.at[1] + 1 for plan in plans}
        task = asyncio.create_task(self._process(todo))
        self.offsets.add(task, ends, {p.completion_key for p in todo})

    def _settle(self) -> None:
        """Move the offsets past every done batch at the front; a failed batch stays
        there (nothing after it is committed) and its error is raised."""
        oldest_failed = (
            self.offsets and self.offsets.oldest.done() and self.offsets.oldest.exception()
        )
        self.offsets.settle(lambda t: t.done() and t.exception() is None, self._assigned)
        if oldest_failed:
            raise oldest_failed

    async def _drain(self) -> None:
        """Wait for every batch in flight and settle what can be."""
        tasks = self.offsets.items()
        if tasks:
            await asyncio.wait(tasks)
        for t in tasks:
            t.exception()  # retrieved: a failed batch is simply not committed
        try:
            self._settle()
        except Exception as exc:
            log.debug("batch in flight failed: %s", exc)

    def _take(self, poll_s: float) -> list[Message]:
        """Up to a batch: a lone event is handled the moment it lands."""
        assert self._consumer is not None
        return take(self._consumer, self.settings.processor.batch_size, poll_s)

    def idle(self) -> bool:
        """Every owned partition handled up to its end (held events aside)."""
        assert self._consumer is not None
        if not all(stage.caught_up for stage in self.repartitioners):
            return False
        if not self._assigned or self._last_took or self.offsets:
            # A step that found records is no reason to ask the broker yet.
            return False
        probe = self._probe or self._open_probe()
        timeout = self.settings.kafka.request_timeout_s
        for p in self._assigned:
            high = high_watermark(probe, self.events_topic, p, timeout)
            # The group's committed offset is asked only for a partition with no record
            # handled yet (a default argument would ask it of every partition, each time).
            done = self.offsets.next.get(p)
            if (done if done is not None else self._committed_offset(p)) < high:
                return False
        return True

    def _open_probe(self) -> Consumer:
        """A client of its own for end offsets: the group consumer's connection has a
        fetch long-poll in flight, and a watermark request queued behind it waits for
        up to fetch.wait.max.ms. Opened (and connected) before the first record."""
        probe = clients.consumer(self.settings, f"{self.group_id}-probe-{uuid.uuid4().hex[:8]}")
        probe.get_watermark_offsets(
            TopicPartition(self.events_topic, 0),
            timeout=self.settings.kafka.request_timeout_s,
            cached=False,
        )
        self._probe = probe
        return probe

    def _committed_offset(self, partition: int) -> int:
        return self._committed_offsets([partition]).get(partition, 0)

    def _committed_offsets(self, partitions: list[int]) -> dict[int, int]:
        assert self._consumer is not None
        found = self._consumer.committed(
            [TopicPartition(self.events_topic, p) for p in partitions],
            timeout=self.settings.kafka.request_timeout_s,
        )
        return {tp.partition: max(0, tp.offset) for tp in found}

    # -- one batch -----------------------------------------------------------

    def _ingress(self, msg: Message) -> IngressRecord:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        key, value = msg.key(), msg.value()
        headers = tuple(
            (name, raw.encode() if isinstance(raw, str) else raw)
            for name, raw in tracing.pairs(msg.headers())
        )
        routed = None
        if self.partitioned:
            # The copy on the routing topic: the record is the ingress one, at its own
            # coordinates (audits, dead letters and completion keys name those).
            source = next((raw for name, raw in headers if name == SOURCE_HEADER), None)
            if source is not None:
                routed = (partition, offset)
                topic, partition, offset = parse_source(source)
                headers = tuple((n, r) for n, r in headers if n != SOURCE_HEADER)
        return IngressRecord(
            topic,
            partition,
            offset,
            key if isinstance(key, bytes) else None,
            value if isinstance(value, bytes) else None,
            utc_from_ms(msg.timestamp()[1]),
            headers,
            routed,
        )

    def _decide(self, batch: list[Message]) -> tuple[list[Plan], list[Plan]]:
        in_flight = set(self.offsets.keys)
        seen_by: dict[int, _Seen] = {}
        now = datetime.now(UTC)
        plans: list[Plan] = []
        for msg in batch:
            record = self._ingress(msg)
            at = record.at[0]
            seen = seen_by.get(at)
            if seen is None:
                seen = seen_by[at] = _Seen(self.follower.completed_for(at), in_flight)
            plan = decide(
                record,
                index=self.follower.index_for(at),
                triggers=self.follower.triggers,
                completed=seen,
                paths=self.paths,
                skew=self.skew,
                window=self.window,
                now=now,
                limits=self.settings.records,
            )
            in_flight.add(plan.completion_key)
            plans.append(plan)
        todo = [p for p in plans if not p.duplicate]
        self.stats.records += len(plans)
        self.stats.duplicates += len(plans) - len(todo)
        self.metrics.outcome["duplicate"].inc(len(plans) - len(todo))
        return plans, todo

    async def _process(self, todo: list[Plan]) -> None:
        """A batch's effects and records, in flight while the next batches come in."""
        # Each plan's records go out the moment its effects are done (those without
        # any at once), not behind the batch's slowest signal; at the end, wait for
        # their acknowledgements (this batch's, not a flush of every batch's).
        self._acks.start()
        sink = audits.BatchSink(self._producer)
        limits = self.settings.records
        group = self.settings.processor.group_id

        def finished(plan: Plan) -> None:
            rejected = plan.rejected
            if rejected is not None:
                sink.send(
                    deadletter.outgoing(self.deadletter_topic, plan, rejected, limits, group=group)
                )
            sink.send(self._audit_record(plan, held=plan.hold and not rejected))

        await self.deliveries.run(todo, finished)
        await sink.finish(self._retry_producing, self.settings.kafka.request_timeout_s)

        late: list[OpenWait] = []
        outcome = self.metrics.outcome
        for plan in todo:
            rejected = plan.rejected
            if rejected is not None:
                self.stats.refused += 1
                outcome["refused"].inc()
                self.metrics.deadletters.labels(rejected.code).inc()
            if plan.hold and rejected is None:
                self.stats.held += 1
                outcome["held"].inc()
                late.extend(self.holding.hold(plan, self.follower.index_for(plan.record.at[0])))
            else:
                if rejected is None:
                    outcome["processed"].inc()
                self.follower.completed_for(plan.record.at[0]).add(
                    plan.done_key(), plan.record.timestamp
                )
        if late:
            await self._release(late)

    # -- held events ---------------------------------------------------------

    async def _release(self, opened: list[OpenWait]) -> None:
        """Deliver held events to waits that just appeared, then audit them again,
        complete, with the new delivery."""
        if self.holding.finished:
            finished, self.holding.finished = self.holding.finished, []
            await self._audit_again(finished)
        pairs = self.holding.take(opened, self.follower.workflow_id)
        if not pairs:
            return
        await self.deliveries.release(pairs)
        plans = list({id(plan): plan for plan, _target in pairs}.values())
        await self._audit_again(plans)
        self.stats.released += len(plans)
        self.metrics.outcome["released"].inc(len(plans))

    async def _expire(self) -> None:
        gone = self.holding.expire(datetime.now(UTC))
        if gone:
            for plan in gone:
                plan.audit = plan.audit.model_copy(update={"expired": True})
            await self._audit_again(gone)
            self.stats.expired += len(gone)
            self.metrics.outcome["expired"].inc(len(gone))

    async def _audit_again(self, plans: list[Plan]) -> None:
        """The complete audit of events that were held: now they are done."""
        await produce_all(
            self._producer,
            [self._audit_record(p, held=False) for p in plans],
            self._retry_producing,
            self.settings.kafka.request_timeout_s,
        )
        for p in plans:
            self.follower.completed_for(p.record.at[0]).add(p.completion_key, p.record.timestamp)

    def _audit_record(self, plan: Plan, held: bool) -> Outgoing:
        """The plan's audit record, announced to the follower, which reads it back."""
        if isinstance(self.follower, PartitionedFollower):
            item = audits.outgoing(
                self.audit_topic, plan, held, plan.record.at[0], self.follower.audit_partitions
            )
        else:
            item = audits.outgoing(self.audit_topic, plan, held)
        assert item.value is not None
        self.follower.expect_audit(item.value, plan.audit)
        return item

    async def _retry_producing(self, what: str, call: Callable[[], Awaitable[None]]) -> None:
        # Never dropped: retried until acknowledged or asked to stop.
        await self.backoff.retry(what, call, on=(NotAcknowledged,))

    # -- commits -------------------------------------------------------------

    def _commit(self, only: set[int] | None = None, wait: bool = True) -> None:
        """Commit what is done. Between batches the commit is sent without waiting for
        the broker's answer (waiting blocked the loop for a round trip per step, a
        seventh of its time routing held events); before partitions change hands or
        the processor stops, a commit that waits sends again whatever was not
        confirmed so. A lost commit in between only means a redelivery, which the
        completion keys skip."""
        assert self._consumer is not None
        targets = self.offsets.targets(only, confirm=wait)
        if not targets:
            return
        offsets = [TopicPartition(self.events_topic, p, o) for p, o in targets.items()]
        if wait:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        else:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        self.offsets.committed_at(targets, confirmed=wait)
        self.stats.commits += 1

    def _commit_retrying(self) -> None:
        try:
            self._commit(wait=False)
        except KafkaException as exc:
            # Nothing is lost: the work is done and audited; the next step commits.
            log.warning("commit failed, will retry: %s", exc)


async def run(
    settings: Settings,
    stop: threading.Event,
    *,
    until_idle: bool = False,
    timeout: float | None = None,
) -> Stats:
    return await Processor(settings, stop).run(until_idle=until_idle, timeout=timeout)
