"""The log follower of partitioned routing: the state of the routing partitions this
instance owns, one FollowerState each, and nothing of the others.

It reads, of the partitions it owns, only theirs: partition p of
flowledger.internal.waits.v1 (the wait records of the runtime topic re-keyed by routing
key, processors/waits_relay.py) and partition p mod n of the audit topic's n (where its
router writes the audit records of p, with the PARTITION_HEADER saying whose they are).
When a partition is assigned, its state is the newest snapshot its previous owner
wrote (processors/snapshot_store.py, one snapshot per partition, in that partition of
the snapshot topic) plus the records after the offsets that snapshot covers: the
follower reads those partitions from there to their end, and each state folds a record
only past its own offsets, so a record is never folded twice into one state. A start
reads the definitions topic whole and nothing else until partitions are assigned."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from flowledger import retry, tracing
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
from topics.admin import end_offsets, group_offsets
from topics.catalogue import WAITS
from topics.codes import TOPIC_MISSING
from topics.serde import RecordRefused, decode_runtime_topic
from topics.watermarks import high_watermark
from workflows.messages import run_workflow_id

log = logging.getLogger(__name__)

Tail = tuple[str, int]


class PartitionedFollower(LogFollower):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # Routing partitions in all (set by the router once it knows the topic).
        self.partitions = 0
        # Partitions of the audit and runtime topics (known at start).
        self.audit_partitions = 0
        self.runtime_partitions = 0
        self.waits_topic = settings.topic(WAITS)
        self.parts: dict[int, FollowerState] = {}
        self.stores: dict[int, SnapshotStore] = {}
        del self._handlers[self.runtime_topic]
        self._handlers[self.waits_topic] = self._on_waits
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
                if topic == self.audit_topic:
                    self.audit_partitions = len(meta.partitions)
                if topic == self.waits_topic:
                    runtime = consumer.list_topics(self.runtime_topic, timeout=timeout)
                    found = runtime.topics.get(self.runtime_topic)
                    self.runtime_partitions = len(found.partitions) if found is not None else 0
                if topic != self.definitions_topic:
                    # Read only once partitions are owned, and only theirs.
                    continue
                for partition in sorted(meta.partitions):
                    self._ends[(topic, partition)] = high_watermark(
                        consumer, topic, partition, timeout
                    )
                    self._positions[(topic, partition)] = 0
                    assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
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

    def tails(self, p: int) -> list[Tail]:
        """What routing partition p's state is folded from."""
        return [(self.waits_topic, p), (self.audit_topic, p % max(1, self.audit_partitions))]

    def adopt(self, owned: set[int], stop: Callable[[], bool]) -> list[OpenWait]:
        """Take on the state of newly owned routing partitions: each one's newest
        snapshot, then the records after it, read to the current end of their waits and
        audit partitions. Returns the waits that opened in that read. Called while the
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
        # Each tail from the oldest offset a new state still needs (or where it is, if
        # already read for another partition), then forward to the end.
        for p in new:
            positions = self.parts[p].positions
            for tail in self.tails(p):
                need = positions.get(tail[0], {}).get(tail[1], 0)
                self._positions[tail] = min(self._positions.get(tail, need), need)
        before = self._read
        relayed = self._runtime_ends()
        self._reassign()
        opened: list[OpenWait] = []
        while not self.caught_up() and not stop():
            opened.extend(self.poll(0.2))
        # The waits of the runtime topic as it was at this adoption are in: once the
        # relay's group has committed past where it ended, read the waits to their end
        # again. Bounded: a relay member that died holds its partitions up to a session
        # timeout, and an event meanwhile is held, not lost, as any event that
        # overtakes its wait.
        deadline = time.monotonic() + self.settings.processor.session_timeout_s
        while not self._relayed(relayed) and not stop():
            if time.monotonic() > deadline:
                log.warning("adopting %s before the waits relay caught up", new)
                break
            opened.extend(self.poll(0.1))
        self._reassign()
        while not self.caught_up() and not stop():
            opened.extend(self.poll(0.2))
        for p in new:
            self.adopted[p]["records_after"] = self._read - before
            # Restoring its held events looks at resolved_by for what the tail closed.
            self.parts[p].index.taken.clear()
        self.startup["adopt_ms"] = self.startup.get("adopt_ms", 0) + int(
            (time.monotonic() - began) * 1000
        )
        return opened

    def _asked(self, call: Callable[[AdminClient, float], dict[Tail, int]]) -> dict[Tail, int]:
        """An offsets request of the admin client, asked again while Kafka cannot answer
        (a broker that just came back reports a fenced leader epoch until the client's
        metadata is new, so each attempt after a failure takes a new client): this runs
        inside the router's assignment, where a failure stops the processor."""
        timeout = self.settings.kafka.request_timeout_s

        def attempt() -> dict[Tail, int]:
            if self._admin is None:
                self._admin = clients.admin(self.settings)
            try:
                return call(self._admin, timeout)
            except ServiceUnavailable:
                self._admin = None
                raise

        return retry.until_deadline(
            attempt,
            transient=lambda exc: isinstance(exc, ServiceUnavailable),
            seconds=max(timeout, 2 * self.settings.processor.session_timeout_s),
            initial=0.2,
        )

    def _runtime_ends(self) -> dict[Tail, int]:
        tails = [(self.runtime_topic, p) for p in range(self.runtime_partitions)]
        return self._asked(lambda admin, timeout: end_offsets(admin, tails, timeout))

    def _relayed(self, ends: dict[Tail, int]) -> bool:
        """Whether the waits relay committed every runtime partition up to ``ends``."""
        group = self.settings.processor.waits_group_id
        done = self._asked(lambda admin, timeout: group_offsets(admin, group, ends, timeout))
        return all(end == 0 or done.get(tail, -1) >= end for tail, end in ends.items())

    def _reassign(self) -> None:
        """Assign what the owned partitions need, from the positions kept, with the
        current end of every tail (to read up to before routing)."""
        assert self._consumer is not None
        # The ends in one request of a client of its own: asked of the follower's
        # consumer, each would queue behind its fetch long-poll (half a second each).
        tails = [tp for tp in self._positions if tp[0] != self.definitions_topic]
        self._ends.update(self._asked(lambda admin, timeout: end_offsets(admin, tails, timeout)))
        # Offsets as numbers, never OFFSET_BEGINNING: a partition assigned so while it
        # was empty, and then read only by polls that do not wait, was never fetched
        # (an adoption into empty topics folded none of its own audit records).
        self._consumer.assign(
            [
                TopicPartition(topic, partition, offset)
                for (topic, partition), offset in self._positions.items()
            ]
        )

    def drop(self, partitions: set[int]) -> None:
        for p in partitions:
            self.parts.pop(p, None)
            store = self.stores.pop(p, None)
            if store is not None:
                store.close()
        needed = {tail for p in self.parts for tail in self.tails(p)}
        gone = [
            tp for tp in self._positions if tp[0] != self.definitions_topic and tp not in needed
        ]
        if gone and self._consumer is not None:
            for tp in gone:
                self._positions.pop(tp, None)
                self._ends.pop(tp, None)
            self._consumer.assign(
                [
                    TopicPartition(topic, partition, offset)
                    for (topic, partition), offset in self._positions.items()
                ]
            )

    # -- folding -----------------------------------------------------------------

    def _fresh(self, msg: Message, state: FollowerState) -> bool:
        """Whether ``state`` has not read this record yet (it moves past it)."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        positions = state.positions.setdefault(topic, {})
        if positions.get(partition, 0) > offset:
            return False
        positions[partition] = offset + 1
        return True

    def _on_waits(self, msg: Message) -> OpenWait | None:
        p = msg.partition()
        state = self.parts.get(p) if p is not None else None
        value = msg.value()
        if state is None or not self._fresh(msg, state) or not value:
            return None
        try:
            event = decode_runtime_topic(value)
        except RecordRefused as exc:
            log.warning("waits record at %s refused: %s", msg.offset(), exc)
            return None
        if isinstance(event, ScheduleEvent):
            return None
        return state.index.apply(event)

    def _on_audit_parts(self, msg: Message) -> OpenWait | None:
        at = msg.partition()
        whose = _header_partition(msg)
        target = None
        # Every state that reads this audit partition moves past the record; only the
        # one it names folds it.
        for p, state in self.parts.items():
            if p % self.audit_partitions == at and self._fresh(msg, state) and p == whose:
                target = state
        if target is None:
            # Not ours to fold: nothing to decode (and nothing to remember, if ours).
            self._own_audits.pop(msg.value() or b"", None)
            return None
        record = self._audit_of(msg)
        if record is not None:
            fold_audit(record, msg.headers(), target.completed, target.pending_held)
        return None

    # -- what the router asks ----------------------------------------------------

    def indexes(self) -> list[RouterIndex]:
        return [state.index for state in self.parts.values()]

    def index_for(self, partition: int) -> RouterIndex:
        state = self.parts.get(partition)
        return state.index if state is not None else self._empty(partition).index

    def completed_for(self, partition: int) -> HorizonSet:
        # A batch of a partition lost meanwhile (no drain: the group moved it on) still
        # finishes; what it adds is the new owner's to fold from the audit.
        state = self.parts.get(partition)
        return state.completed if state is not None else self._empty(partition).completed

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
            if topic in (self.waits_topic, self.audit_topic)
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
