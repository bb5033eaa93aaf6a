"""The log follower of partitioned routing: the state of the routing partitions this
instance owns, one FollowerState each, and nothing of the others.

Every instance still reads the runtime and audit topics as they grow (a wait's routing
partition is known only once its WaitCreated is read), but folds into a partition's
state only what belongs to it: the waits whose routing key falls in it, the resolutions
of those waits, and the completion keys and held events of the audit records its router
wrote (the PARTITION_HEADER). When a partition is assigned, its state is the newest
snapshot its previous owner wrote (processors/snapshot_store.py, one snapshot per
partition, in that partition of the snapshot topic) plus the runtime and audit records
after the offsets that snapshot covers: the follower goes back to those offsets and
reads forward, and each state folds a record only past its own offsets, so a record is
never folded twice into one state. A start reads no history at all: the definitions
topic whole, and the rest from the end, until partitions are assigned."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from flowledger import tracing
from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from processors.follower import LogFollower, fold_audit
from processors.horizon import HorizonSet
from processors.router_index import OpenWait, RouterIndex, WaitKey
from processors.routing_key import PARTITION_HEADER, wait_partition
from processors.snapshot import FollowerState
from processors.snapshot_store import SnapshotStore
from schemas.schedule import ScheduleEvent
from topics import clients
from topics.admin import end_offsets
from topics.codes import TOPIC_MISSING
from topics.serde import RecordRefused, decode_runtime_topic
from topics.watermarks import high_watermark
from workflows.messages import run_workflow_id

log = logging.getLogger(__name__)


class PartitionedFollower(LogFollower):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # Routing partitions in all (set by the router once it knows the topic).
        self.partitions = 0
        self.parts: dict[int, FollowerState] = {}
        self.stores: dict[int, SnapshotStore] = {}
        self._handlers[self.runtime_topic] = self._on_runtime_parts
        self._handlers[self.audit_topic] = self._on_audit_parts
        # Per adoption: what was read (snapshot bytes, records folded after them).
        self.adopted: dict[int, dict[str, int]] = {}
        self._admin: AdminClient | None = None

    # -- start and assignment --------------------------------------------------

    def start(self) -> None:
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
                    # No partition is owned yet: only the definitions are read whole.
                    start = 0 if topic == self.definitions_topic else high
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
        self.startup["snapshot_bytes"] = 0

    def _accepts(self, partition: int) -> Callable[[WaitKey], bool]:
        n = self.partitions

        def accepts(key: WaitKey) -> bool:
            return wait_partition(key[0], key[1], key[2], n) == partition

        return accepts

    def _empty(self, partition: int) -> FollowerState:
        index = RouterIndex(horizon=self.horizon, accepts=self._accepts(partition))
        return FollowerState(index, HorizonSet(self.horizon), {}, {})

    def adopt(self, owned: set[int], stop: Callable[[], bool]) -> list[OpenWait]:
        """Take on the state of newly owned routing partitions: each one's newest
        snapshot, then the records after it, read to the current end of the runtime
        and audit topics. Returns the waits that opened in that read. Called while the
        follower is not polling (inside the router's consume, on assignment)."""
        assert self._consumer is not None
        new = sorted(set(owned) - set(self.parts))
        if not new:
            return []
        began = time.monotonic()
        for p in new:
            store = SnapshotStore(self.settings, partition=p)
            loaded = store.load()
            if loaded is not None:
                state = loaded.state
                state.index.accepts = self._accepts(p)
                self.adopted[p] = {"snapshot_bytes": loaded.bytes_read}
                self.startup["snapshot_bytes"] = (
                    self.startup.get("snapshot_bytes", 0) + loaded.bytes_read
                )
            else:
                state = self._empty(p)
                self.adopted[p] = {"snapshot_bytes": 0}
            self.parts[p] = state
            self.stores[p] = store
        # Back to the oldest offset a new state still needs, then forward to the end.
        # The ends in one request of a client of their own: asked of the follower's
        # consumer, each would queue behind its fetch long-poll (half a second each).
        if self._admin is None:
            self._admin = clients.admin(self.settings)
        tails = [tp for tp in self._positions if tp[0] != self.definitions_topic]
        self._ends.update(end_offsets(self._admin, tails, self.settings.kafka.request_timeout_s))
        assignment: list[TopicPartition] = []
        for (topic, partition), position in self._positions.items():
            start = position
            if topic != self.definitions_topic:
                need = min(self.parts[p].positions.get(topic, {}).get(partition, 0) for p in new)
                start = min(position, need)
            self._positions[(topic, partition)] = start
            assignment.append(
                TopicPartition(topic, partition, start if start else OFFSET_BEGINNING)
            )
        self._consumer.assign(assignment)
        before = self._read
        opened: list[OpenWait] = []
        while not self.caught_up() and not stop():
            opened.extend(self.poll(0.2))
        for p in new:
            self.adopted[p]["records_after"] = self._read - before
        self.startup["adopt_ms"] = self.startup.get("adopt_ms", 0) + int(
            (time.monotonic() - began) * 1000
        )
        return opened

    def drop(self, partitions: set[int]) -> None:
        for p in partitions:
            self.parts.pop(p, None)
            store = self.stores.pop(p, None)
            if store is not None:
                store.close()

    # -- folding -----------------------------------------------------------------

    def _due(self, msg: Message) -> list[tuple[int, FollowerState]]:
        """The owned states that have not folded this record yet (each moves past it)."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        due = []
        for p, state in self.parts.items():
            positions = state.positions.setdefault(topic, {})
            if positions.get(partition, 0) <= offset:
                positions[partition] = offset + 1
                due.append((p, state))
        return due

    def _on_runtime_parts(self, msg: Message) -> OpenWait | None:
        due = self._due(msg)
        if not due:
            return None
        try:
            event = decode_runtime_topic(msg.value() or b"")
        except RecordRefused as exc:
            log.warning("runtime record at %s refused: %s", msg.offset(), exc)
            return None
        if isinstance(event, ScheduleEvent):
            return None
        opened = None
        for _p, state in due:
            wait = state.index.apply(event)
            if wait is not None:
                opened = wait
        return opened

    def _on_audit_parts(self, msg: Message) -> OpenWait | None:
        due = dict(self._due(msg))
        record = self._audit_of(msg)
        partition = _header_partition(msg)
        state = due.get(partition) if partition is not None else None
        if record is not None and state is not None:
            fold_audit(record, msg.headers(), state.completed, state.pending_held)
        return None

    # -- what the router asks ----------------------------------------------------

    def index_for(self, partition: int) -> RouterIndex:
        return self.parts[partition].index

    def completed_for(self, partition: int) -> HorizonSet:
        return self.parts[partition].completed

    def workflow_id(self, run_id: str) -> str:
        for state in self.parts.values():
            found = state.index.workflow_ids.get(run_id)
            if found:
                return found
        return run_workflow_id(run_id)

    def counts(self) -> dict[str, int]:
        # A list first: a metrics scrape calls this from its own thread.
        states = list(self.parts.values())
        return {
            "open_waits": sum(len(s.index.waits) for s in states),
            "completed": sum(len(s.completed) for s in states),
            "held": sum(len(s.pending_held) for s in states),
        }

    def copies(self) -> list[tuple[SnapshotStore, FollowerState]]:
        """A copy of each owned partition's state, for its snapshot (between polls)."""
        return [
            (self.stores[p], self._copy(state))
            for p, state in self.parts.items()
            if p in self.stores
        ]

    def _copy(self, state: FollowerState) -> FollowerState:
        index = RouterIndex(horizon=self.horizon)
        index.waits = dict(state.index.waits)
        index.workflow_ids = dict(state.index.workflow_ids)
        index.resolved_by = state.index.resolved_by.copy()
        positions = {
            topic: dict(parts)
            for topic, parts in state.positions.items()
            if topic != self.definitions_topic
        }
        return FollowerState(index, state.completed.copy(), dict(state.pending_held), positions)

    def prune(self, now: datetime) -> int:
        cutoff = now - max(self.horizon, self.window)
        gone = 0
        for state in self.parts.values():
            stale = [k for k, a in state.pending_held.items() if a.received_at < cutoff]
            for key in stale:
                del state.pending_held[key]
            gone += len(stale)
            gone += state.completed.prune(now) + state.index.resolved_by.prune(now)
        return gone

    def close(self) -> None:
        super().close()
        for store in self.stores.values():
            store.close()


def _header_partition(msg: Message) -> int | None:
    for name, raw in tracing.pairs(msg.headers()):
        if name == PARTITION_HEADER and isinstance(raw, bytes):
            try:
                return int(raw)
            except ValueError:
                return None
    return None
