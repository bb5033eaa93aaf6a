"""`topics ensure` and `topics describe`: create what is missing, report drift, never
silently change an existing topic."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from topics import clients
from topics.catalogue import TopicSpec, catalogue
from topics.codes import KAFKA_UNAVAILABLE, TOPIC_CONFIG_FAILED, TOPIC_CREATE_FAILED


@dataclass
class TopicReport:
    name: str
    partitions: int
    config: dict[str, str]
    status: str  # created | exists | updated | differs | missing
    differences: list[str] = field(default_factory=list)
    # Replicas of its partitions (the fewest, if they differ); None when missing.
    replication_factor: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "config": self.config,
            "status": self.status,
            "differences": self.differences,
        }


def _timeout(settings: Settings) -> float:
    return settings.kafka.request_timeout_s


def _existing(settings: Settings) -> dict[str, tuple[int, int]]:
    """Each topic's partitions and replication factor."""
    try:
        metadata = clients.admin(settings).list_topics(timeout=_timeout(settings))
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka.bootstrap_servers} did not answer: {exc}",
            code=KAFKA_UNAVAILABLE,
        ) from exc
    return {
        name: (
            len(t.partitions),
            min((len(p.replicas) for p in t.partitions.values()), default=0),
        )
        for name, t in metadata.topics.items()
    }


def _configs(settings: Settings, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    admin = clients.admin(settings)
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
    out: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        entries = future.result(timeout=_timeout(settings))
        out[resource.name] = {k: v.value for k, v in entries.items() if v.value is not None}
    return out


def _compare(
    spec: TopicSpec, layout: tuple[int, int], config: dict[str, str], replicas: int
) -> list[str]:
    diffs = []
    partitions, replication = layout
    if partitions != spec.partitions:
        diffs.append(f"partitions: expected {spec.partitions}, found {partitions}")
    if replication < replicas:
        # Fewer copies than the deployment asks for: `ensure` cannot add them (that
        # is a partition reassignment), so it is reported.
        diffs.append(f"replication_factor: expected {replicas}, found {replication}")
    for key, wanted in spec.config.items():
        found = config.get(key)
        if found != wanted:
            diffs.append(f"{key}: expected {wanted}, found {found}")
    return diffs


def describe(settings: Settings) -> list[TopicReport]:
    specs = catalogue(settings)
    existing = _existing(settings)
    present = [s.name for s in specs if s.name in existing]
    configs = _configs(settings, present)
    reports = []
    for s in specs:
        if s.name not in existing:
            reports.append(TopicReport(s.name, s.partitions, dict(s.config), "missing"))
            continue
        found = {k: configs[s.name].get(k, "") for k in s.config}
        diffs = _compare(s, existing[s.name], configs[s.name], settings.kafka.replication_factor)
        partitions, replication = existing[s.name]
        reports.append(
            TopicReport(
                s.name, partitions, found, "differs" if diffs else "exists", diffs, replication
            )
        )
    return reports


def ensure(settings: Settings) -> list[TopicReport]:
    specs = catalogue(settings)
    existing = _existing(settings)
    missing = [s for s in specs if s.name not in existing]
    if missing:
        admin = clients.admin(settings)
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    s.partitions,
                    settings.kafka.replication_factor,
                    config=dict(s.config),
                )
                for s in missing
            ],
            operation_timeout=_timeout(settings),
        )
        for name, future in futures.items():
            try:
                future.result(timeout=_timeout(settings))
            except KafkaException as exc:
                # Another instance may have created it between our look and our create.
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise ServiceUnavailable(
                        f"creating topic {name} failed: {exc}", code=TOPIC_CREATE_FAILED
                    ) from exc
    created = {s.name for s in missing}
    # Broker metadata can trail the controller for a moment after a create.
    deadline = time.monotonic() + _timeout(settings)
    reports = describe(settings)
    while any(r.status == "missing" for r in reports) and time.monotonic() < deadline:
        time.sleep(0.1)
        reports = describe(settings)
    for report in reports:
        if report.name in created and report.status == "exists":
            report.status = "created"
    return _apply_alterable(settings, reports)


# The configs `ensure` changes on an existing topic: raising or lowering the record
# size limit loses nothing, and a limit that differs between the topics one record
# flows through would stop that record at the narrowest one; the in-sync replicas a
# write needs are the deployment's choice, made once for every topic alike.
_ALTERABLE = ("max.message.bytes", "min.insync.replicas")


def _apply_alterable(settings: Settings, reports: list[TopicReport]) -> list[TopicReport]:
    specs = {s.name: s for s in catalogue(settings)}
    todo = {
        r.name: [k for k in _ALTERABLE if r.config.get(k) != specs[r.name].config.get(k)]
        for r in reports
        if r.status == "differs"
    }
    todo = {name: keys for name, keys in todo.items() if keys}
    if not todo:
        return reports
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(k, specs[name].config[k], incremental_operation=AlterConfigOpType.SET)
                for k in keys
            ],
        )
        for name, keys in todo.items()
    ]
    futures = clients.admin(settings).incremental_alter_configs(resources)
    for resource, future in futures.items():
        try:
            future.result(timeout=_timeout(settings))
        except KafkaException as exc:
            raise ServiceUnavailable(
                f"setting the configs of {resource.name} failed: {exc}",
                code=TOPIC_CONFIG_FAILED,
            ) from exc
    after = {r.name: r for r in describe(settings)}
    return [_updated(after[r.name]) if r.name in todo else r for r in reports]


def _updated(report: TopicReport) -> TopicReport:
    if report.status == "exists":
        report.status = "updated"
    return report


def end_offsets(
    client: AdminClient, partitions: Iterable[tuple[str, int]], timeout: float
) -> dict[tuple[str, int], int]:
    """The end offset a read_committed consumer sees in each partition, now, in one
    request per broker. An admin client has connections of its own: a consumer asking
    for each watermark queues every request behind its own long-polling fetch."""
    request = {TopicPartition(topic, p): OffsetSpec.latest() for topic, p in partitions}
    if not request:
        return {}
    try:
        futures = client.list_offsets(
            request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout
        )
        return {
            (tp.topic, tp.partition): future.result(timeout=timeout).offset
            for tp, future in futures.items()
        }
    except (KafkaException, TimeoutError) as exc:
        # A broker that died holding the request answers neither way: its future
        # times out (concurrent.futures' TimeoutError is the builtin since 3.11).
        raise ServiceUnavailable(
            f"Kafka did not report end offsets: {exc or 'no answer in time'}",
            code=KAFKA_UNAVAILABLE,
        ) from exc


def group_offsets(
    client: AdminClient, group: str, partitions: Iterable[tuple[str, int]], timeout: float
) -> dict[tuple[str, int], int]:
    """The group's committed offset in each partition (-1: none), in one request."""
    wanted = [TopicPartition(topic, p) for topic, p in partitions]
    if not wanted:
        return {}
    try:
        futures = client.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, wanted)], request_timeout=timeout
        )
        answer = futures[group].result(timeout=timeout)
    except (KafkaException, TimeoutError) as exc:
        raise ServiceUnavailable(
            f"Kafka did not report the offsets of group {group}: {exc or 'no answer in time'}",
            code=KAFKA_UNAVAILABLE,
        ) from exc
    return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions or []}
