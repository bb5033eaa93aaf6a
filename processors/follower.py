"""The log follower: every processor instance reads the whole runtime, definitions and
audit topics (assigned, not shared through the group) to keep its own routing index,
trigger table and set of completed events. Rebuilt from offset 0 on every start."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from processors import audit as audit_records
from processors.bounded import BoundedSet
from processors.pipeline import audit_completion_keys
from processors.router_index import OpenWait, RouterIndex
from processors.triggers import TriggerIndex
from schemas.audit import AuditRecord
from schemas.schedule import ScheduleEvent
from topics import clients
from topics.catalogue import AUDIT, DEFINITIONS, RUNTIME
from topics.codes import TOPIC_MISSING
from topics.serde import RecordRefused, decode_audit, decode_definition, decode_runtime_topic
from topics.watermarks import high_watermark

log = logging.getLogger(__name__)


class LogFollower:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        p = settings.processor
        self.index = RouterIndex(resolved_limit=p.resolved_events_limit)
        self.triggers = TriggerIndex()
        # Completion keys of the most recent events (see processors/bounded.py).
        self.completed = BoundedSet(p.completed_keys_limit)
        # Held events (audited with the held header, not completed yet) by completion
        # key: the durable copy of every instance's early events.
        self.pending_held: dict[str, AuditRecord] = {}
        self.runtime_topic = settings.topic(RUNTIME)
        self.definitions_topic = settings.topic(DEFINITIONS)
        self.audit_topic = settings.topic(AUDIT)
        self._consumer: Consumer | None = None
        self._ends: dict[tuple[str, int], int] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._handlers: dict[str, Callable[[Message], OpenWait | None]] = {
            self.runtime_topic: self._on_runtime,
            self.definitions_topic: self._on_definition,
            self.audit_topic: self._on_audit,
        }

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
                    self._ends[(topic, partition)] = high
                    self._positions[(topic, partition)] = 0
                    assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        except Exception:
            consumer.close()
            raise
        consumer.assign(assignment)
        self._consumer = consumer

    def caught_up(self) -> bool:
        return all(self._positions[tp] >= end for tp, end in self._ends.items())

    def catch_up(self, stop: Callable[[], bool]) -> None:
        """Read up to the end offsets taken at start, before any ingress record."""
        while not self.caught_up() and not stop():
            self.poll(0.2)

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
                wait = self._handlers[topic](msg)
                if wait is not None:
                    opened.append(wait)
            # Keep reading while whole batches come back: a backlog is applied in one go.
            if len(messages) < limit or time.monotonic() >= deadline:
                return opened

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

    def _on_audit(self, msg: Message) -> OpenWait | None:
        try:
            record = decode_audit(msg.value() or b"")
        except RecordRefused:
            return None
        keys = audit_completion_keys(record)
        if audit_records.is_held(msg.headers()):
            # Held, not done: whoever owns its ingress partition holds it again.
            if keys[-1] not in self.completed:
                self.pending_held[keys[-1]] = record
            return None
        self.completed.update(keys)
        for key in keys:
            self.pending_held.pop(key, None)
        return None

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
