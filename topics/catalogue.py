"""The topic catalogue: every topic flowledger owns, with its partitions and configs.
Names carry a version suffix; a breaking record change makes a new topic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flowledger.settings import Settings

EVENTS = "flowledger.events.v1"
AUDIT = "flowledger.audit.v1"
RUNTIME = "flowledger.runtime.v1"
DEFINITIONS = "flowledger.definitions.v1"
DEADLETTER = "flowledger.deadletter.v1"
OPERATORS = "flowledger.operators.v1"
REDRIVES = "flowledger.redrives.v1"
INTERNAL_PREFIX = "flowledger.internal."
# The processor's routing-state snapshots (processors/snapshot_store.py).
SNAPSHOTS = f"{INTERNAL_PREFIX}processor-snapshots.v1"
# Ingress records re-keyed by routing key (processors/forwarder.py), when partitioned.
ROUTING = f"{INTERNAL_PREFIX}routing.v1"
# The wait lifecycle records of the runtime topic re-keyed by routing key
# (processors/waits_relay.py), when partitioned: each router reads only its partitions.
WAITS = f"{INTERNAL_PREFIX}waits.v1"

_THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000
# A repartition topic is read within moments; a week covers a router down for days.
_SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    key: str = ""
    purpose: str = ""


def catalogue(settings: Settings) -> list[TopicSpec]:
    k = settings.kafka
    specs = [
        TopicSpec(
            settings.topic(EVENTS),
            k.events_partitions,
            {"cleanup.policy": "delete", "retention.ms": str(k.events_retention_ms)},
            key="publisher's choice (default tenant:event_id)",
            purpose="ingress events from publishers",
        ),
        TopicSpec(
            settings.topic(AUDIT),
            k.partitions,
            {"cleanup.policy": "delete", "retention.ms": "-1"},
            key="tenant:event_id",
            purpose="one audit record per ingested event",
        ),
        TopicSpec(
            settings.topic(RUNTIME),
            k.partitions,
            {"cleanup.policy": "delete", "retention.ms": "-1"},
            key="run_id",
            purpose="state changes emitted by workflow activities",
        ),
        TopicSpec(
            settings.topic(DEFINITIONS),
            1,
            {"cleanup.policy": "compact"},
            key="tenant:definition_id:version",
            purpose="published workflow definitions",
        ),
        TopicSpec(
            settings.topic(DEADLETTER),
            1,
            {"cleanup.policy": "delete", "retention.ms": str(_THIRTY_DAYS_MS)},
            key="original key",
            purpose="records the processor refused, with reason headers",
        ),
        TopicSpec(
            settings.topic(OPERATORS),
            1,
            {"cleanup.policy": "delete", "retention.ms": "-1"},
            key="action_id",
            purpose="every run-control request an operator made, accepted or refused",
        ),
        TopicSpec(
            settings.topic(REDRIVES),
            1,
            {"cleanup.policy": "compact"},
            key="deadletter partition:offset",
            purpose="redrive progress: which dead letters were sent back, and where to",
        ),
        TopicSpec(
            settings.topic(SNAPSHOTS),
            # As many as the ingress topic: a snapshot's chunks are spread over them
            # and read back in parallel.
            k.events_partitions,
            {
                "cleanup.policy": "compact",
                # Roll and clean often: a reader reads every slot's records that
                # compaction has not yet removed.
                "segment.ms": "60000",
                "min.cleanable.dirty.ratio": "0.1",
                "max.compaction.lag.ms": "60000",
                "delete.retention.ms": "60000",
            },
            key="group:slot:chunk (or :manifest)",
            purpose="the processor's routing-state snapshots, with the offsets they cover",
        ),
        TopicSpec(
            settings.topic(ROUTING),
            # Co-partitioned with the snapshots: routing partition p's state is in
            # snapshot partition p, so its owner reads only that one.
            k.events_partitions,
            {"cleanup.policy": "delete", "retention.ms": str(_SEVEN_DAYS_MS)},
            key="the ingress record's key (partition: its routing key's)",
            purpose="ingress records re-keyed by routing key (processor.routing partitioned)",
        ),
        TopicSpec(
            settings.topic(WAITS),
            # Co-partitioned with the routing topic: the waits of routing partition p
            # are in partition p, which only p's owner reads.
            k.events_partitions,
            # A later record of a key supersedes the earlier one (a wait's resolution
            # its creation), so compaction keeps what a reader from offset 0 needs.
            {"cleanup.policy": "compact"},
            key="run_id:wait_id (a wait), run_id (a run's start, end or reset)",
            purpose="runtime wait records re-keyed by routing key (processor.routing partitioned)",
        ),
    ]
    # Set on every topic alike: a record one topic takes, the next one takes too.
    size = {"max.message.bytes": str(k.max_message_bytes)}
    if k.min_insync_replicas is not None:
        size["min.insync.replicas"] = str(k.min_insync_replicas)
    return [TopicSpec(s.name, s.partitions, {**s.config, **size}, s.key, s.purpose) for s in specs]


def spec(settings: Settings, base: str) -> TopicSpec:
    name = settings.topic(base)
    for item in catalogue(settings):
        if item.name == name:
            return item
    raise KeyError(base)
