"""The first stage of the partitioned router: ingress records re-keyed by routing key.

Consumes flowledger.events.v1 in the processor's group and writes each record, its
bytes, key, headers and timestamp unchanged, to the partition of
flowledger.internal.routing.v1 that its routing key falls in (processors/routing_key.py),
with its ingress coordinates in a header (processors/repartition.py). The router's
completion keys make a second copy of a record, written again after a crash, a
duplicate. Nothing else is decided here: validation, de-duplication, routing and the
audit are the router's, on the copy."""

from __future__ import annotations

from confluent_kafka import Message

from flowledger.settings import Settings
from processors.correlation import CorrelationPaths
from processors.effects import Backoff
from processors.repartition import Repartitioner
from processors.routing_key import record_partition
from topics.catalogue import EVENTS, ROUTING
from topics.producing import Outgoing


class Forwarder(Repartitioner):
    def __init__(self, settings: Settings, paths: CorrelationPaths, backoff: Backoff) -> None:
        super().__init__(
            settings,
            backoff,
            source=settings.topic(EVENTS),
            target=settings.topic(ROUTING),
            group=settings.processor.group_id,
        )
        self.paths = paths

    def copies(self, msg: Message) -> list[Outgoing]:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        routing_partition = record_partition(
            msg.value(),
            topic,
            partition,
            offset,
            paths=self.paths,
            limits=self.settings.records,
            partitions=self.partitions,
        )
        return [self.copy(msg, routing_partition)]
