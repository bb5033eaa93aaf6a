"""`processor status`: per-partition lag of the ingress topic for the processor's
consumer group (committed offset against the high watermark), and when routing is
partitioned, of the routing topic for the routing group and of the runtime topic for
the waits relay's group."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from flowledger import retry
from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from topics import clients, kafka_errors
from topics.catalogue import EVENTS, ROUTING, RUNTIME
from topics.codes import KAFKA_UNAVAILABLE, TOPIC_MISSING


def _committed(probe: Consumer, partitions: list[TopicPartition], timeout: float) -> Any:
    """The group's committed offsets; a group the broker has not placed yet (never
    used, or its coordinator moving) answers NOT_COORDINATOR for a moment."""
    return retry.until_deadline(
        lambda: probe.committed(partitions, timeout=timeout),
        transient=kafka_errors.transient,
        seconds=timeout,
        initial=0.2,
    )


def _stage(probe: Consumer, topic: str, group: str, timeout: float) -> dict[str, Any]:
    meta = probe.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise ServiceUnavailable(f"topic {topic} is not available", code=TOPIC_MISSING)
    partitions = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
    committed = {tp.partition: tp.offset for tp in _committed(probe, partitions, timeout)}
    rows = []
    for tp in partitions:
        low, high = probe.get_watermark_offsets(tp, timeout=timeout, cached=False)
        done = committed.get(tp.partition, -1)
        # No commit yet: everything still in the partition is to do.
        position = done if done >= 0 else low
        rows.append(
            {
                "partition": tp.partition,
                "committed": done if done >= 0 else None,
                "end_offset": high,
                "lag": max(0, high - position),
            }
        )
    return {
        "group": group,
        "topic": topic,
        "partitions": rows,
        "total_lag": sum(r["lag"] for r in rows),
    }


def _probe(settings: Settings, group: str) -> Consumer:
    # Its own consumer with the group's id, never subscribed: reading the committed
    # offsets does not join the group or disturb the running instances.
    return clients.consumer(settings, group, **{"client.id": f"status-{uuid.uuid4().hex[:6]}"})


def lag(settings: Settings) -> dict[str, Any]:
    """The ingress stage at the top level; when routing is partitioned, the routing
    topic's stage under "routing" and the runtime topic's relay (its wait records
    re-keyed for the routers) under "waits", and `total_lag` counts all of them: a
    record forwarded but not yet routed, or a wait not yet relayed, is still to do."""
    p = settings.processor
    timeout = settings.kafka.request_timeout_s
    stages = [(settings.topic(EVENTS), p.group_id)]
    if p.partitioned:
        stages.append((settings.topic(ROUTING), p.routing_group_id))
        stages.append((settings.topic(RUNTIME), p.waits_group_id))
    reports = []
    for topic, group in stages:
        probe = _probe(settings, group)
        try:
            reports.append(_stage(probe, topic, group, timeout))
        except ServiceUnavailable:
            raise
        except Exception as exc:
            raise ServiceUnavailable(
                f"Kafka did not answer: {exc}", code=KAFKA_UNAVAILABLE
            ) from exc
        finally:
            probe.close()
    report = reports[0]
    for name, stage in zip(("routing", "waits"), reports[1:], strict=False):
        report[name] = stage
        report["total_lag"] += stage["total_lag"]
    return report
