"""The ingress processor's shell: consume flowledger.events.v1 in a consumer group,
carry out each record's plan (dead letter, signals, starts, audit), and commit an
offset only once everything before it is durable.

Built on confluent-kafka rather than faust (see processors/__init__.py). One asyncio
loop; `consume` runs in a worker thread. Up to `max_batches_in_flight` batches have
their effects in flight at once (each workflow's signals still in partition order, see
effects.Lanes), so a slow signal does not stop the next records from being taken; an
offset moves only past batches that are completely done. Rebalance callbacks run inside
`consume`: a revoke first lets the batches in flight finish, then commits."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from temporalio.client import Client

from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from processors import audit as audits
from processors import deadletter, effects
from processors.correlation import load_paths
from processors.effects import Backoff, StartRefused, Stopped, Transient
from processors.follower import LogFollower
from processors.pipeline import (
    TRIGGER_MAPPING_FAILED,
    IngressRecord,
    Plan,
    SignalTarget,
    decide,
    plan_from_held_audit,
    processing_failed,
    utc_from_ms,
)
from processors.producing import Outgoing, Sink, produce_all
from processors.router_index import EarlyEvents, HeldEvent, OpenWait, eligible
from schemas.audit import Delivery
from schemas.bounded_json import RecordRefused
from topics import clients
from topics.catalogue import AUDIT, DEADLETTER, EVENTS
from topics.serde import encode
from workflows.worker import connect

log = logging.getLogger(__name__)

ClientFactory = Callable[[Settings], Awaitable[Client]]


@dataclass
class Stats:
    records: int = 0
    refused: int = 0
    duplicates: int = 0
    signals: int = 0
    starts: int = 0
    held: int = 0
    released: int = 0
    expired: int = 0
    commits: int = 0
    caught_up: bool = False
    # Start-up (Temporal connect, index rebuild) within `seconds`.
    ready_seconds: float = 0.0
    # When the first ingress record arrived (after start-up and the group join), so a
    # backlog's processing rate is records / (seconds - first_record_seconds).
    first_record_seconds: float = 0.0
    # When --until-idle found every owned partition handled (shutdown not included).
    caught_up_seconds: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class _Seen:
    """Completed events plus those of the batches in flight, so a second copy of an
    event in flight is a duplicate too (its offset is committed only after the first
    copy's batch is done)."""

    completed: Container[str]
    batch: set[str] = field(default_factory=set)

    def __contains__(self, key: object) -> bool:
        return key in self.completed or key in self.batch


@dataclass
class _Batch:
    """A batch whose effects are in flight while the next ones are consumed."""

    task: asyncio.Task[None]
    # Per partition, the offset after its last record in this batch.
    ends: dict[int, int]
    keys: set[str]


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
        self.events_topic = settings.topic(EVENTS)
        self.audit_topic = settings.topic(AUDIT)
        self.deadletter_topic = settings.topic(DEADLETTER)
        self.backoff = Backoff(settings, self.stop)
        self.follower = LogFollower(settings)
        self.early = EarlyEvents(self.skew)
        self.stats = Stats()
        self._client: Client | None = None
        self._consumer: Consumer | None = None
        self._producer = clients.producer(settings)
        # Per owned partition: the offset after the last record fully handled.
        self._next: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._assigned: set[int] = set()
        self._started = time.monotonic()
        # Batches in consumption order; offsets move only past a done prefix of them.
        self._inflight: deque[_Batch] = deque()
        self._inflight_keys: set[str] = set()
        self._lanes = effects.Lanes(p.max_in_flight)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_took = 0
        self._probe: Consumer | None = None

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        self._client = await self.backoff.retry(
            "connecting to Temporal",
            lambda: self.client_factory(self.settings),
            on=(FlowledgerError,),
        )
        await self.backoff.retry(
            "reading the runtime topic from Kafka",
            lambda: asyncio.to_thread(self.follower.start),
            on=(FlowledgerError, KafkaException),
        )
        await asyncio.to_thread(self.follower.catch_up, self.stop.is_set)
        session_ms = int(self.settings.processor.session_timeout_s * 1000)
        consumer = clients.consumer(
            self.settings,
            self.settings.processor.group_id,
            **{
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, min(3000, session_ms // 3)),
            },
        )
        consumer.subscribe(
            [self.events_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._consumer = consumer

    def close(self) -> None:
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
        self._producer.flush(self.settings.kafka.request_timeout_s)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = {tp.partition for tp in partitions}
        self._assigned.update(owned)
        # Early events of these partitions, from their held audits: the commit went
        # past them when they were held, so this is where they live on.
        now = datetime.now(UTC)
        for key, audit in list(self.follower.pending_held.items()):
            if audit.source_topic != self.events_topic or audit.source_partition not in owned:
                continue
            plan = plan_from_held_audit(audit, key)
            held = self._held(plan)
            if held.expires_at > now:
                self.early.hold(held)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        loop = self._loop
        if self._inflight and loop is not None and loop.is_running():
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
        self.early.drop_partitions(partitions)
        for p in partitions:
            self._assigned.discard(p)
            self._next.pop(p, None)
            self._committed.pop(p, None)

    # -- the loop ------------------------------------------------------------

    async def run(self, until_idle: bool = False, timeout: float | None = None) -> Stats:
        started = self._started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        try:
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
            self.close()
            self.stats.seconds = time.monotonic() - started
        return self.stats

    async def step(self) -> None:
        assert self._consumer is not None
        poll_s = self.settings.processor.poll_timeout_s
        opened = await asyncio.to_thread(self.follower.poll, poll_s if not self._assigned else 0)
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
        if len(self._inflight) >= self.settings.processor.max_batches_in_flight:
            # The window is full: wait for the oldest batch before taking more.
            await asyncio.wait([self._inflight[0].task])
        self._settle()
        self._commit_retrying()

    def _launch(self, batch: list[Message]) -> None:
        plans, todo = self._decide(batch)
        ends: dict[int, int] = {}
        for plan in plans:
            ends[plan.record.partition] = plan.record.offset + 1
        keys = {p.completion_key for p in todo}
        self._inflight_keys |= keys
        task = asyncio.create_task(self._process(todo))
        self._inflight.append(_Batch(task, ends, keys))

    def _settle(self) -> None:
        """Move the offsets past every done batch at the front; a failed batch stays
        there (nothing after it is committed) and its error is raised."""
        while self._inflight and self._inflight[0].task.done():
            head = self._inflight[0]
            error = head.task.exception()
            if error is not None:
                raise error
            self._inflight.popleft()
            self._inflight_keys -= head.keys
            for partition, end in head.ends.items():
                if partition in self._assigned:
                    self._next[partition] = end

    async def _drain(self) -> None:
        """Wait for every batch in flight and settle what can be."""
        if self._inflight:
            await asyncio.wait([b.task for b in self._inflight])
        for b in self._inflight:
            b.task.exception()  # retrieved: a failed batch is simply not committed
        try:
            self._settle()
        except Exception as exc:
            log.debug("batch in flight failed: %s", exc)

    def _take(self, poll_s: float) -> list[Message]:
        """Up to a batch of what is there now; when nothing is, wait up to `poll_s` for
        the first record only (`consume(n, t)` waits out `t` unless `n` arrive), so a
        lone event is handled the moment it lands."""
        assert self._consumer is not None
        size = self.settings.processor.batch_size
        messages = self._consumer.consume(size, 0)
        if messages:
            return messages
        messages = self._consumer.consume(1, poll_s)
        if messages and size > 1:
            messages.extend(self._consumer.consume(size - 1, 0))
        return messages

    def idle(self) -> bool:
        """Every owned partition handled up to its end (held events aside)."""
        assert self._consumer is not None
        if not self._assigned or self._last_took or self._inflight:
            # A step that found records is no reason to ask the broker yet.
            return False
        probe = self._probe or self._open_probe()
        timeout = self.settings.kafka.request_timeout_s
        for p in self._assigned:
            _low, high = probe.get_watermark_offsets(
                TopicPartition(self.events_topic, p), timeout=timeout, cached=False
            )
            if self._next.get(p, self._committed_offset(p)) < high:
                return False
        return True

    def _open_probe(self) -> Consumer:
        """A client of its own for end offsets: the group consumer's connection has a
        fetch long-poll in flight, and a watermark request queued behind it waits for
        up to fetch.wait.max.ms. Opened (and connected) before the first record."""
        probe = clients.consumer(
            self.settings, f"{self.settings.processor.group_id}-probe-{uuid.uuid4().hex[:8]}"
        )
        probe.get_watermark_offsets(
            TopicPartition(self.events_topic, 0),
            timeout=self.settings.kafka.request_timeout_s,
            cached=False,
        )
        self._probe = probe
        return probe

    def _committed_offset(self, partition: int) -> int:
        assert self._consumer is not None
        found = self._consumer.committed(
            [TopicPartition(self.events_topic, partition)],
            timeout=self.settings.kafka.request_timeout_s,
        )
        offset = found[0].offset if found else -1
        return max(0, offset)

    # -- one batch -----------------------------------------------------------

    def _ingress(self, msg: Message) -> IngressRecord:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        key, value = msg.key(), msg.value()
        return IngressRecord(
            topic,
            partition,
            offset,
            key if isinstance(key, bytes) else None,
            value if isinstance(value, bytes) else None,
            utc_from_ms(msg.timestamp()[1]),
        )

    def _decide(self, batch: list[Message]) -> tuple[list[Plan], list[Plan]]:
        seen = _Seen(self.follower.completed, set(self._inflight_keys))
        now = datetime.now(UTC)
        plans: list[Plan] = []
        for msg in batch:
            plan = decide(
                self._ingress(msg),
                index=self.follower.index,
                triggers=self.follower.triggers,
                completed=seen,
                paths=self.paths,
                skew=self.skew,
                window=self.window,
                now=now,
                limits=self.settings.records,
            )
            seen.batch.add(plan.completion_key)
            plans.append(plan)
        todo = [p for p in plans if not p.duplicate]
        self.stats.records += len(plans)
        self.stats.duplicates += len(plans) - len(todo)
        return plans, todo

    async def _process(self, todo: list[Plan]) -> None:
        """A batch's effects and records, in flight while the next batches come in."""
        # Each plan's records go out the moment its effects are done (those without
        # any at once), not behind the batch's slowest signal; one flush at the end.
        sink = Sink(self._producer)

        limits = self.settings.records

        def finished(plan: Plan) -> None:
            rejected = plan.rejected
            if rejected is not None:
                sink.send(
                    Outgoing(
                        self.deadletter_topic,
                        plan.record.key,
                        deadletter.value(plan.record, limits),
                        deadletter.headers(plan.record, rejected, limits),
                    )
                )
            sink.send(self._audit(plan, held=plan.hold and rejected is None))

        await self._effects(todo, finished)
        await sink.finish(self.backoff, self.settings.kafka.request_timeout_s)

        late: list[OpenWait] = []
        for plan in todo:
            if plan.rejected is not None:
                self.stats.refused += 1
            if plan.hold and plan.rejected is None:
                self.stats.held += 1
                held = self._held(plan)
                self.early.hold(held)
                # A wait that opened while this batch was in flight was offered the
                # held events before this one was among them: offer it again.
                late.extend(
                    w
                    for w in self.follower.index.matching(*held.key)
                    if eligible(w, held.received_at, self.skew)
                )
            else:
                self.follower.completed.add(plan.done_key())
        if late:
            await self._release(late)

    async def _effects(self, plans: list[Plan], finished: Callable[[Plan], None]) -> None:
        """Signals and starts of a batch; each plan's audit gets their outcomes, then
        `finished(plan)` is called as soon as that plan's last effect is done."""
        assert self._client is not None
        client = self._client
        groups: dict[str, list[Callable[[], Awaitable[None]]]] = {}
        outcomes: dict[int, list[Delivery]] = {id(p): list(p.already_delivered) for p in plans}
        left: dict[int, int] = {
            id(p): (len(p.signals) + len(p.starts)) if p.envelope is not None else 0 for p in plans
        }

        def done(plan: Plan, delivery: Delivery) -> None:
            outcomes[id(plan)].append(delivery)
            left[id(plan)] -= 1
            if left[id(plan)] == 0:
                self._with_deliveries(plan, outcomes[id(plan)])
                finished(plan)

        for plan in plans:
            if left[id(plan)] == 0:
                self._with_deliveries(plan, outcomes[id(plan)])
                finished(plan)

        for plan in plans:
            if plan.envelope is None:
                continue
            try:
                event = plan.delivered_event() if plan.signals else None
            except Exception as exc:
                plan.fail(processing_failed(exc))
                event = None
            for target in plan.signals:

                async def do_signal(
                    plan: Plan = plan, target: Any = target, ev: Any = event
                ) -> None:
                    outcome = await self._guarded(
                        plan,
                        lambda: (
                            self.backoff.retry(
                                f"signal {target.workflow_id}",
                                lambda: effects.signal(client, target, ev),
                            )
                            if ev is not None
                            else _not_sent()
                        ),
                    )
                    self.stats.signals += outcome == "delivered"
                    done(
                        plan,
                        Delivery(
                            run_id=target.run_id,
                            wait_id=target.wait_id,
                            kind="signal",
                            outcome=outcome,
                        ),
                    )

                groups.setdefault(target.workflow_id, []).append(do_signal)
            for start_target in plan.starts:

                async def do_start(plan: Plan = plan, target: Any = start_target) -> None:
                    async def attempt() -> str:
                        context = plan.trigger_context()
                        try:
                            return await self.backoff.retry(
                                f"start {target.workflow_id}",
                                lambda: effects.start(
                                    self.settings, client, target, context, plan.record.timestamp
                                ),
                            )
                        except StartRefused as exc:
                            definition = target.record
                            plan.fail(
                                RecordRefused(
                                    f"the trigger of {definition.definition_id} "
                                    f"v{definition.version} refused the event: "
                                    f"{exc.code}: {exc.message}",
                                    code=TRIGGER_MAPPING_FAILED,
                                    field="trigger.payload_mapping",
                                    reason=exc.code,
                                )
                            )
                            return f"refused: {exc.code}"

                    outcome = await self._guarded(plan, attempt)
                    self.stats.starts += outcome == "started"
                    done(plan, Delivery(run_id=target.run_id, kind="start", outcome=outcome))

                groups.setdefault(start_target.workflow_id, []).append(do_start)

        if groups:
            await self._lanes.run(groups)

    @staticmethod
    async def _guarded(plan: Plan, effect: Callable[[], Awaitable[str]]) -> str:
        """An effect's outcome; an unexpected exception fails this record alone
        (PROCESSING_FAILED, dead-lettered with the exception) instead of the batch."""
        try:
            return await effect()
        except (Stopped, Transient, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("an effect of %s failed", plan.record)
            plan.fail(processing_failed(exc))
            return "failed: PROCESSING_FAILED"

    @staticmethod
    def _with_deliveries(plan: Plan, found: list[Delivery]) -> None:
        if found:
            # Signals first, then starts, each in a stable order: a redone event
            # reports its deliveries the same way.
            found.sort(key=lambda d: (d.kind != "signal", d.run_id, d.wait_id or ""))
            plan.audit = plan.audit.model_copy(update={"deliveries": found})

    def _audit(self, plan: Plan, held: bool) -> Outgoing:
        return Outgoing(
            self.audit_topic, audits.audit_key(plan), encode(plan.audit), audits.headers(held)
        )

    def _held(self, plan: Plan) -> HeldEvent:
        assert plan.envelope is not None and plan.correlation is not None
        assert plan.correlation.key is not None
        return HeldEvent(
            tenant=plan.envelope.tenant,
            event_type=plan.envelope.event_type,
            correlation_key=plan.correlation.key,
            event_id=str(plan.envelope.event_id),
            received_at=plan.record.timestamp,
            expires_at=plan.record.timestamp + self.window,
            partition=plan.record.partition,
            offset=plan.record.offset,
            item=plan,
        )

    # -- held events ---------------------------------------------------------

    async def _release(self, opened: list[OpenWait]) -> None:
        """Deliver held events to waits that just appeared, then audit them again,
        complete, with the new delivery."""
        released: list[tuple[HeldEvent, OpenWait]] = []
        for wait in opened:
            released.extend((h, wait) for h in self.early.take_for(wait))
        if not released:
            return
        assert self._client is not None
        client = self._client
        groups: dict[str, list[Callable[[], Awaitable[None]]]] = {}
        for held, wait in released:
            plan: Plan = held.item
            workflow_id = self.follower.index.workflow_id(wait.run_id)
            target = SignalTarget(wait.run_id, wait.wait_id, workflow_id)

            async def deliver(plan: Plan = plan, target: Any = target) -> None:
                event = plan.delivered_event()
                outcome = await self.backoff.retry(
                    f"signal {target.workflow_id}", lambda: effects.signal(client, target, event)
                )
                self.stats.signals += outcome == "delivered"
                delivery = Delivery(
                    run_id=target.run_id, wait_id=target.wait_id, kind="signal", outcome=outcome
                )
                plan.audit = plan.audit.model_copy(
                    update={"deliveries": [*plan.audit.deliveries, delivery]}
                )

            groups.setdefault(workflow_id, []).append(deliver)
        await self._lanes.run(groups)
        plans = {id(h.item): h.item for h, _w in released}
        await produce_all(
            self._producer,
            [self._audit(p, held=False) for p in plans.values()],
            self.backoff,
            self.settings.kafka.request_timeout_s,
        )
        for p in plans.values():
            self.follower.completed.add(p.completion_key)
        self.stats.released += len(plans)

    async def _expire(self) -> None:
        gone = self.early.expire(datetime.now(UTC))
        if not gone:
            return
        await produce_all(
            self._producer,
            [self._audit(h.item, held=False) for h in gone],
            self.backoff,
            self.settings.kafka.request_timeout_s,
        )
        for h in gone:
            self.follower.completed.add(h.item.completion_key)
        self.stats.expired += len(gone)

    # -- commits -------------------------------------------------------------

    def _targets(self, only: set[int] | None = None) -> list[TopicPartition]:
        out = []
        for p, nxt in self._next.items():
            if only is not None and p not in only:
                continue
            if self._committed.get(p) != nxt:
                out.append(TopicPartition(self.events_topic, p, nxt))
        return out

    def _commit(self, only: set[int] | None = None) -> None:
        assert self._consumer is not None
        targets = self._targets(only)
        if not targets:
            return
        self._consumer.commit(offsets=targets, asynchronous=False)
        for tp in targets:
            self._committed[tp.partition] = tp.offset
        self.stats.commits += 1

    def _commit_retrying(self) -> None:
        try:
            self._commit()
        except KafkaException as exc:
            # Nothing is lost: the work is done and audited; the next step commits.
            log.warning("commit failed, will retry: %s", exc)


async def _not_sent() -> str:
    return "failed: PROCESSING_FAILED"


async def run(
    settings: Settings,
    stop: threading.Event,
    *,
    until_idle: bool = False,
    timeout: float | None = None,
) -> Stats:
    return await Processor(settings, stop).run(until_idle=until_idle, timeout=timeout)
