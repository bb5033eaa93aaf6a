"""Published definitions on flowledger.definitions.v1 (a thin shell over Kafka).

The topic is the source of truth: it is compacted and keyed by
`tenant:definition_id:version`, so reading it from the beginning gives every
published version. A version, once published, never changes: the same content
again is a no-op and different content is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from confluent_kafka import KafkaException

from flowledger import retry
from flowledger.errors import FlowledgerError, InvalidInput, ServiceUnavailable
from flowledger.settings import Settings
from schemas.definition_record import DefinitionRecord
from topics import clients, kafka_errors
from topics.catalogue import DEFINITIONS
from topics.codes import PUBLISH_FAILED
from topics.producing import Outgoing, produce_and_flush
from topics.reader import ReadRecord, read_all
from topics.serde import RecordRefused, decode_definition, encode
from workflows.codes import (
    DEFINITION_NOT_FOUND,
    DEFINITION_VERSION_EXISTS,
    DEFINITIONS_READ_FAILED,
)
from workflows.definitions.canonical import definition_hash
from workflows.definitions.validate import parse

DefinitionKey = tuple[str, str, int]


@dataclass(frozen=True)
class PublishOutcome:
    outcome: Literal["published", "unchanged"]
    record: DefinitionRecord
    # Where the record sits: the new one, or the earlier identical one.
    partition: int | None
    offset: int | None

    @property
    def published(self) -> bool:
        return self.outcome == "published"

    def as_dict(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "outcome": self.outcome,
            "hash": self.record.hash,
            "key": self.record.key(),
            "tenant": self.record.tenant,
            "id": self.record.definition_id,
            "version": self.record.version,
            "partition": self.partition,
            "offset": self.offset,
        }


@dataclass(frozen=True)
class _Stored:
    record: DefinitionRecord
    partition: int
    offset: int


# A topic created moments ago may not have elected its partition leader yet: such
# answers go away on their own within seconds.
_READ_DEADLINE_S: Final = 30.0


def _read_records(settings: Settings) -> list[ReadRecord]:
    topic = settings.topic(DEFINITIONS)
    try:
        return retry.until_deadline(
            lambda: read_all(settings, topic),
            transient=kafka_errors.transient,
            seconds=_READ_DEADLINE_S,
            initial=0.5,
        )
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"reading {topic} failed: {exc}", code=DEFINITIONS_READ_FAILED, topic=topic
        ) from exc


def _read(settings: Settings) -> dict[DefinitionKey, _Stored]:
    out: dict[DefinitionKey, _Stored] = {}
    for item in _read_records(settings):
        if not item.value:
            # A tombstone: compaction's way of removing a key. Matched against the
            # records' own keys, since a tenant or id may itself contain ':'.
            for gone in [k for k, s in out.items() if s.record.key() == item.key]:
                del out[gone]
            continue
        try:
            record = decode_definition(item.value)
        except RecordRefused:
            # Someone else's garbage on the topic must not hide the good records.
            continue
        key = (record.tenant, record.definition_id, record.version)
        out[key] = _Stored(record, item.partition, item.offset)
    return out


def published(settings: Settings) -> dict[DefinitionKey, DefinitionRecord]:
    """Every published definition by (tenant, definition_id, version)."""
    return {key: stored.record for key, stored in _read(settings).items()}


def latest(settings: Settings, tenant: str, definition_id: str) -> DefinitionRecord | None:
    versions = [
        record
        for (t, d, _v), record in published(settings).items()
        if t == tenant and d == definition_id
    ]
    return max(versions, key=lambda r: r.version, default=None)


def get(
    settings: Settings, tenant: str, definition_id: str, version: int
) -> DefinitionRecord | None:
    return published(settings).get((tenant, definition_id, version))


def publish(settings: Settings, document: dict[str, Any]) -> PublishOutcome:
    """Validate and publish; raises DefinitionInvalid or DEFINITION_VERSION_EXISTS.

    Two publishers racing on the same new version can both get through: Kafka has
    no compare-and-set, and the later record then wins on the compacted topic.
    """
    definition = parse(document, settings)
    digest = definition_hash(document)
    key = (definition.tenant, definition.id, definition.version)
    existing = _read(settings).get(key)
    if existing is not None:
        if existing.record.hash == digest:
            return PublishOutcome("unchanged", existing.record, existing.partition, existing.offset)
        raise FlowledgerError(
            f"{definition.tenant}:{definition.id} version {definition.version} is already "
            "published with different content; publish it as a new version",
            code=DEFINITION_VERSION_EXISTS,
            tenant=definition.tenant,
            id=definition.id,
            version=definition.version,
            existing_hash=existing.record.hash,
            hash=digest,
        )
    record = DefinitionRecord(
        tenant=definition.tenant,
        definition_id=definition.id,
        version=definition.version,
        hash=digest,
        published_at=datetime.now(UTC),
        definition=document,
    )
    partition, offset = _produce(settings, record)
    return PublishOutcome("published", record, partition, offset)


def retire(settings: Settings, tenant: str, definition_id: str) -> list[DefinitionRecord]:
    """Remove every version of a definition from the topic (a tombstone per version:
    compaction's way of removing a key); the versions removed, oldest first. Runs
    already started keep their pinned copy."""
    versions = sorted(
        (s.record for k, s in _read(settings).items() if k[:2] == (tenant, definition_id)),
        key=lambda r: r.version,
    )
    if not versions:
        raise InvalidInput(
            f"no published definition {definition_id} for tenant {tenant}",
            code=DEFINITION_NOT_FOUND,
            status=404,
            tenant=tenant,
            definition_id=definition_id,
        )
    topic = settings.topic(DEFINITIONS)
    items = [Outgoing(topic, r.key().encode("utf-8"), None) for r in versions]
    done = produce_and_flush(clients.producer(settings), items, settings.kafka.request_timeout_s)
    if done.failed:
        raise ServiceUnavailable(
            f"Kafka did not acknowledge the retirement of {tenant}:{definition_id}: "
            + "; ".join(why for _item, why in done.failed),
            code=PUBLISH_FAILED,
            tenant=tenant,
            definition_id=definition_id,
        )
    return versions


def _produce(settings: Settings, record: DefinitionRecord) -> tuple[int, int]:
    item = Outgoing(settings.topic(DEFINITIONS), record.key().encode("utf-8"), encode(record))
    done = produce_and_flush(clients.producer(settings), [item], settings.kafka.request_timeout_s)
    if done.failed or not done.acknowledged:
        raise ServiceUnavailable(
            f"Kafka did not acknowledge the definition {record.key()}: "
            + "; ".join(why for _item, why in done.failed),
            code=PUBLISH_FAILED,
            key=record.key(),
        )
    ack = done.acknowledged[0]
    return ack.partition, ack.offset
