"""The wait records of the runtime topic, re-keyed by routing key for the partitioned
routers: each instance relays the runtime partitions the relay's group gives it, and
each router then reads only the partitions of flowledger.internal.waits.v1 that it
owns, instead of every runtime record of every run (processors/waits_routing.py says
which record goes where). What a relay remembers of a runtime partition is forgotten
when the partition leaves it: the next owner starts knowing nothing, and copies what it
cannot place to every partition."""

from __future__ import annotations

import logging

from confluent_kafka import Message

from flowledger.settings import Settings
from processors.effects import Backoff
from processors.repartition import Repartitioner
from processors.waits_routing import RelayMemory, may_matter, targets
from schemas.schedule import ScheduleEvent
from topics.catalogue import RUNTIME, WAITS
from topics.producing import Outgoing
from topics.serde import RecordRefused, decode_runtime_topic

log = logging.getLogger(__name__)


class WaitsRelay(Repartitioner):
    def __init__(self, settings: Settings, backoff: Backoff) -> None:
        super().__init__(
            settings,
            backoff,
            source=settings.topic(RUNTIME),
            target=settings.topic(WAITS),
            group=settings.processor.waits_group_id,
        )
        self.memory: dict[int, RelayMemory] = {}

    def assigned(self, partitions: set[int]) -> None:
        super().assigned(partitions)
        for p in partitions:
            self.memory[p] = RelayMemory()

    def revoked(self, partitions: set[int]) -> None:
        super().revoked(partitions)
        for p in partitions:
            self.memory.pop(p, None)

    def copies(self, msg: Message) -> list[Outgoing]:
        value = msg.value()
        if not value or not may_matter(value):
            return []
        try:
            event = decode_runtime_topic(value)
        except RecordRefused as exc:
            log.warning("runtime record at %s refused: %s", msg.offset(), exc)
            return []
        if isinstance(event, ScheduleEvent):
            return []
        partition = msg.partition()
        assert partition is not None
        memory = self.memory.setdefault(partition, RelayMemory())
        to, key = targets(event, self.partitions, memory)
        return [self.copy(msg, p, key.encode()) for p in to]
