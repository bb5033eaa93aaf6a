"""The log follower: every processor instance reads the runtime, definitions and audit
topics (assigned, not shared through the group) to keep its own routing index, trigger
table and set of completed events.

A start does not fold the history: it loads the newest snapshot of this state
(processors/snapshot_store.py) and reads the runtime and audit topics only from the
offsets the snapshot covers; the definitions topic is compacted (live state only) and
read whole. Without a snapshot (a first start) it folds the topics from offset 0."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from processors import audit as audit_records
from processors.horizon import HorizonSet
from processors.pipeline import audit_completion_keys
from processors.router_index import OpenWait, RouterIndex
from processors.snapshot import FollowerState
from processors.snapshot_store import SnapshotStore
from processors.triggers import TriggerIndex
from schemas.audit import AuditRecord
from schemas.schedule import ScheduleEvent
from topics import clients
from topics.catalogue import AUDIT, DEFINITIONS, RUNTIME
from topics.codes import TOPIC_MISSING
from topics.serde import RecordRefused, decode_audit, decode_definition, decode_runtime_topic
from topics.watermarks import high_watermark

log = logging.getLogger(__name__)

# Own audit records remembered until read back (about 0.5 kB each): far more than the
# records of the batches in flight, which is all that is ever waiting to be read.
OWN_AUDITS_MAX = 100_000


class LogFollower:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.horizon = settings.processor.dedup_horizon
        self.window = timedelta(seconds=settings.processor.early_event_window_s)
        self.index = RouterIndex(horizon=self.horizon)
        self.triggers = TriggerIndex()
        # Completion keys of the events of the de-duplication horizon.
        self.completed = HorizonSet(self.horizon)
        # Held events (audited with the held header, not completed yet) by completion
        # key: the durable copy of every instance's early events.
        self.pending_held: dict[str, AuditRecord] = {}
        self.runtime_topic = settings.topic(RUNTIME)
        self.definitions_topic = settings.topic(DEFINITIONS)
        self.audit_topic = settings.topic(AUDIT)
        self.snapshots = SnapshotStore(settings)
        # What the start read: the snapshot (if any) and the records after it.
        self.startup: dict[str, int] = {}
        self._consumer: Consumer | None = None
        self._ends: dict[tuple[str, int], int] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._read = 0
        # Audit records this instance produced, by their exact bytes, until the
        # follower reads them back: the record is the one those bytes decode to, so
        # folding it needs no second decode (see `expect_audit`).
        self._own_audits: dict[bytes, AuditRecord] = {}
        self._handlers: dict[str, Callable[[Message], OpenWait | None]] = {
            self.runtime_topic: self._on_runtime,
            self.definitions_topic: self._on_definition,
            self.audit_topic: self._on_audit,
        }

    def start(self) -> None:
        began = time.monotonic()
        loaded = self.snapshots.load()
        self.startup["snapshot_load_ms"] = int((time.monotonic() - began) * 1000)
        covered: dict[str, dict[int, int]] = {}
        if loaded is not None:
            state = loaded.state
            self.index, self.completed = state.index, state.completed
            self.pending_held = state.pending_held
            covered = state.positions
            self.startup |= {
                "snapshot_bytes": loaded.bytes_read,
                "snapshot_waits": len(state.index.waits),
                "snapshot_completed": len(state.completed),
            }
        consumer = clients.consumer(
            self.settings, f"{self.settings.processor.group_id}-follower-{uuid.uuid4().hex[:8]}"
        )
        timeout = self.settings.kafka.request_timeout_s
        assignment: list[TopicPartition] = []
        try:
            for topic in self._handlers:
                meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
                if meta is None or meta.error is not None or not meta.partitions:
                    raise ServiceUnavailable(
                        f"topic {topic} is not available (run `flowledger topics ensure`)",
                        code=TOPIC_MISSING,
                        topic=topic,
                    )
                for partition in sorted(meta.partitions):
                    high = high_watermark(consumer, topic, partition, timeout)
                    start = covered.get(topic, {}).get(partition, 0)
                    self._ends[(topic, partition)] = high
                    self._positions[(topic, partition)] = start
                    assignment.append(
                        TopicPartition(topic, partition, start if start else OFFSET_BEGINNING)
                    )
        except Exception:
            consumer.close()
            raise
        consumer.assign(assignment)
        self._consumer = consumer

    def caught_up(self) -> bool:
        return all(self._positions[tp] >= end for tp, end in self._ends.items())

    def catch_up(self, stop: Callable[[], bool]) -> None:
        """Read up to the end offsets taken at start, before any ingress record."""
        before, began = self._read, time.monotonic()
        while not self.caught_up() and not stop():
            self.poll(0.2)
        # What the fold closed before any event was held: restoring looks at resolved_by.
        self.index.taken.clear()
        self.startup["tail_records"] = self._read - before
        self.startup["catch_up_ms"] = int((time.monotonic() - began) * 1000)

    def poll(self, timeout: float, limit: int = 1000) -> list[OpenWait]:
        """Apply what is available; returns the event waits opened meanwhile."""
        assert self._consumer is not None
        opened: list[OpenWait] = []
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            messages = self._consumer.consume(limit, timeout=left)
            for msg in messages:
                if msg.error():
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None and partition is not None and offset is not None
                self._positions[(topic, partition)] = offset + 1
                self._read += 1
                wait = self._handlers[topic](msg)
                if wait is not None:
                    opened.append(wait)
            # Keep reading while whole batches come back: a backlog is applied in one go.
            if len(messages) < limit or time.monotonic() >= deadline:
                return opened

    def state(self) -> FollowerState:
        """A copy of what is folded so far and the offsets it covers, for a snapshot.
        Call it between polls (from the loop): the copy is then consistent."""
        index = RouterIndex(horizon=self.horizon)
        index.waits = dict(self.index.waits)
        index.workflow_ids = dict(self.index.workflow_ids)
        index.resolved_by = self.index.resolved_by.copy()
        positions: dict[str, dict[int, int]] = {}
        for (topic, partition), offset in self._positions.items():
            if topic != self.definitions_topic:
                positions.setdefault(topic, {})[partition] = offset
        return FollowerState(index, self.completed.copy(), dict(self.pending_held), positions)

    def prune(self, now: datetime) -> int:
        """Forget what is past the de-duplication horizon. A held event is kept until
        its early-event window is over too (however short the horizon), so no owner
        after a rebalance misses one it should still hold."""
        cutoff = now - max(self.horizon, self.window)
        stale = [k for k, a in self.pending_held.items() if a.received_at < cutoff]
        for key in stale:
            del self.pending_held[key]
        return self.completed.prune(now) + self.index.resolved_by.prune(now) + len(stale)

    def _on_runtime(self, msg: Message) -> OpenWait | None:
        try:
            event = decode_runtime_topic(msg.value() or b"")
        except RecordRefused as exc:
            log.warning("runtime record at %s refused: %s", msg.offset(), exc)
            return None
        if isinstance(event, ScheduleEvent):
            # A schedule's own record: no wait opens or closes with it.
            return None
        return self.index.apply(event)

    def _on_definition(self, msg: Message) -> OpenWait | None:
        value = msg.value()
        key = msg.key()
        if not value:
            if isinstance(key, bytes):
                self.triggers.apply_tombstone(key.decode("utf-8", "replace"))
            return None
        try:
            self.triggers.apply(decode_definition(value))
        except RecordRefused as exc:
            log.warning("definition record at %s refused: %s", msg.offset(), exc)
        return None

    def expect_audit(self, value: bytes, record: AuditRecord) -> None:
        """``value`` (the encoding of ``record``) is about to be produced to the audit
        topic: when the follower reads those bytes back, it folds ``record`` instead
        of decoding them again. Called before the produce, so the entry is there
        before the record can be read; a copy written twice (a produce retried) is
        decoded the second time. Bounded: past OWN_AUDITS_MAX entries not yet read
        back, the older half is forgotten (decoded as any other record when read)."""
        own = self._own_audits
        own[value] = record
        if len(own) > OWN_AUDITS_MAX:
            # list() of a dict runs in C: the follower's thread cannot change it midway.
            for stale in list(own)[: len(own) - OWN_AUDITS_MAX // 2]:
                own.pop(stale, None)

    def _on_audit(self, msg: Message) -> OpenWait | None:
        record = self._audit_of(msg)
        if record is not None:
            fold_audit(record, msg.headers(), self.completed, self.pending_held)
        return None

    def _audit_of(self, msg: Message) -> AuditRecord | None:
        value = msg.value() or b""
        record = self._own_audits.pop(value, None)
        if record is None:
            try:
                record = decode_audit(value)
            except RecordRefused:
                return None
        return record

    # What the processor asks of the state, by the partition it consumed a record from;
    # here one state serves every partition (see PartitionedFollower for the other way).

    def index_for(self, _partition: int) -> RouterIndex:
        return self.index

    def indexes(self) -> list[RouterIndex]:
        return [self.index]

    def completed_for(self, _partition: int) -> HorizonSet:
        return self.completed

    def workflow_id(self, run_id: str) -> str:
        return self.index.workflow_id(run_id)

    @property
    def records_read(self) -> int:
        """Records the follower read since start (partitioned: of the waits, audit and
        definitions partitions it reads; else of the runtime, audit and definitions)."""
        return self._read

    def counts(self) -> dict[str, int]:
        return {
            "open_waits": len(self.index.waits),
            "completed": len(self.completed),
            "held": len(self.pending_held),
        }

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.snapshots.close()


def fold_audit(
    record: AuditRecord,
    headers: object,
    completed: HorizonSet,
    pending_held: dict[str, AuditRecord],
) -> None:
    keys = audit_completion_keys(record)
    if audit_records.is_held(headers):
        # Held, not done: whoever owns its partition holds it again.
        if keys[-1] not in completed:
            pending_held[keys[-1]] = record
        return
    completed.update(keys, record.received_at)
    for key in keys:
        pending_held.pop(key, None)
