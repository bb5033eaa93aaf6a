"""Which partition of the routing topic an ingress record belongs to, pure.

With `processor.routing = "partitioned"` every ingress record is re-keyed onto
flowledger.internal.routing.v1 by its routing key `(tenant, event_type,
correlation_key)`, and each wait is held by the instance that owns the partition of the
same key, so an event meets its waits on one instance. A record with no routing key
(no correlation, an envelope refused) goes by its event, or by its coordinates: every
copy of it lands on the same partition, where its completion keys are."""

from __future__ import annotations

import zlib

from flowledger.settings import RecordSettings
from processors.correlation import CorrelationPaths, resolve
from topics.serde import decode_envelope

# The ingress record's own coordinates and key, carried by its copy on the routing topic.
SOURCE_HEADER = "flowledger.routing.source"
# On audit records of the partitioned router: the routing partition whose state they fold into.
PARTITION_HEADER = "flowledger.routing.partition"


def partition_of(text: str, partitions: int) -> int:
    """CRC-32, like Kafka's own choice of a hash that is the same in every process
    (Python's hash() is salted per process)."""
    return zlib.crc32(text.encode("utf-8")) % partitions


def wait_partition(tenant: str, event_type: str, correlation_key: str, partitions: int) -> int:
    # NUL cannot occur in the parts' JSON strings unescaped, so the join is unambiguous.
    return partition_of(f"{tenant}\0{event_type}\0{correlation_key}", partitions)


def record_partition(
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    *,
    paths: CorrelationPaths,
    limits: RecordSettings,
    partitions: int,
) -> int:
    """The routing partition of one ingress record: its waits' partition when it has a
    routing key, else its event's, else its coordinates'."""
    try:
        envelope = decode_envelope(value, limits)
        correlation = resolve(envelope.model_dump(mode="json"), paths)
    except Exception:
        # Refused (or failing) here, it is refused by the router too, as decide() does.
        return partition_of(f"at\0{topic}\0{partition}\0{offset}", partitions)
    if correlation.key is not None:
        return wait_partition(envelope.tenant, envelope.event_type, correlation.key, partitions)
    return partition_of(f"event\0{envelope.tenant}\0{envelope.event_id}", partitions)


def source_header(topic: str, partition: int, offset: int) -> bytes:
    return f"{partition}:{offset}:{topic}".encode()


def parse_source(raw: bytes) -> tuple[str, int, int]:
    partition, offset, topic = raw.decode("utf-8").split(":", 2)
    return topic, int(partition), int(offset)
