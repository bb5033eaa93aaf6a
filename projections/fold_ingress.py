"""Pure folds of the records the processor and the publisher write: ingress audit
records and published definitions.

Both are keyed so that one key always lands in one partition; a record whose
coordinates are not after those of the row it would change was already applied (a
replayed partition) and changes nothing.

Audit de-duplication: one row per event. The processor may audit an event again after a
redelivery (it redoes the missing parts of an interrupted run); the later audit wins for
the correlation and error fields, the deliveries are the union of every audit of the
event (a delivery reported again takes its latest outcome), ``received_at`` stays the
first time the event was received and ``last_received_at`` the latest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from projections.changes import Change, Coordinates, Delete, Upsert
from schemas.audit import AuditRecord, Delivery
from schemas.definition_record import DefinitionRecord
from schemas.definition_record import parse_definition_key as parse_key
from schemas.operator import OperatorAction

AUDIT = "workflow_runtime_events"
DELIVERIES = "workflow_event_deliveries"
DEFINITIONS = "workflow_definitions"
OPERATOR_ACTIONS = "workflow_operator_actions"


@dataclass(frozen=True)
class AuditState:
    """What is known of an already audited event."""

    partition: int
    offset: int
    received_at: datetime | None
    last_received_at: datetime | None
    audit_count: int
    delivery_keys: frozenset[str]


@dataclass(frozen=True)
class AuditFolded:
    state: AuditState | None
    changes: tuple[Change, ...]
    applied: bool


def audit_id(record: AuditRecord) -> str:
    """The audit row's key. Event ids are unique only within a tenant, so the tenant
    is part of it (empty for a record refused before its tenant was known)."""
    if record.event_id:
        return f"{record.tenant or ''}:{record.event_id}"
    return f"ingress:{record.source_topic}:{record.source_partition}:{record.source_offset}"


def delivery_key(delivery: Delivery) -> str:
    return f"{delivery.kind}:{delivery.run_id}:{delivery.wait_id or ''}"


def audit_status(error_code: str | None, delivery_count: int, expired: bool = False) -> str:
    if error_code:
        return "error"
    if delivery_count:
        return "matched"
    return "expired" if expired else "unmatched"


def _after(at: Coordinates, partition: int, offset: int) -> bool:
    # Another partition means the topic was re-keyed or re-partitioned; the newest
    # record read is then the best guess of the latest, so it applies.
    return at.partition != partition or at.offset > offset


def fold_audit(record: AuditRecord, at: Coordinates, state: AuditState | None) -> AuditFolded:
    received = record.received_at.astimezone(UTC)
    reported = {delivery_key(d): d for d in record.deliveries}
    if state is not None and (
        not _after(at, state.partition, state.offset)
        # a copy of an audit already applied (same or older processing time, no new
        # delivery), e.g. a producer retry that landed twice
        or (
            state.last_received_at is not None
            and received <= state.last_received_at
            and set(reported) <= state.delivery_keys
        )
    ):
        return AuditFolded(state, (), applied=False)
    key = audit_id(record)
    first_received = received if state is None or state.received_at is None else state.received_at
    known = state.delivery_keys if state is not None else frozenset()
    last = received
    if state is not None and state.last_received_at is not None:
        last = max(last, state.last_received_at)
    all_keys = known | frozenset(reported)
    prov = at.provenance(record.event_id)
    changes: list[Change] = [
        Upsert(
            DELIVERIES,
            {"audit_id": key, "delivery_key": dkey},
            {
                "event_id": record.event_id,
                "tenant": record.tenant,
                "run_id": d.run_id,
                "wait_id": d.wait_id,
                "kind": d.kind,
                "outcome": d.outcome,
                "received_at": received,
                **prov,
            },
        )
        for dkey, d in reported.items()
    ]
    count = (state.audit_count if state is not None else 0) + 1
    changes.append(
        Upsert(
            AUDIT,
            {"audit_id": key},
            {
                "event_id": record.event_id,
                "event_type": record.event_type,
                "event_name": record.event_name,
                "tenant": record.tenant,
                "occurred_at": record.occurred_at,
                "workflow_correlation_key": record.workflow_correlation_key,
                "payload": record.payload,
                "payload_sha256": record.payload_sha256,
                "payload_bytes": record.payload_bytes,
                "payload_excerpt": record.payload_excerpt,
                "user_id": record.user_id,
                "source": record.source,
                "payload_schema_ref": record.payload_schema_ref,
                "schema_version": record.schema_version,
                "correlation_key": record.correlation_key,
                "correlation_source": record.correlation_source,
                "correlation_detail": record.correlation_detail,
                "error_code": record.error_code,
                "error_message": record.error_message,
                "status": audit_status(record.error_code, len(all_keys), record.expired),
                "delivery_count": len(all_keys),
                "audit_count": count,
                "received_at": first_received,
                "last_received_at": last,
                "ingress_topic": record.source_topic,
                "ingress_partition": record.source_partition,
                "ingress_offset": record.source_offset,
                **prov,
            },
        )
    )
    new_state = AuditState(at.partition, at.offset, first_received, last, count, all_keys)
    return AuditFolded(new_state, tuple(changes), applied=True)


@dataclass(frozen=True)
class DefinitionState:
    """Where the row was last changed, and the content hash it then got."""

    partition: int
    offset: int
    hash: str | None


@dataclass(frozen=True)
class DefinitionFolded:
    state: DefinitionState | None
    changes: tuple[Change, ...]
    applied: bool


def definition_key(tenant: str, definition_id: str, version: int) -> dict[str, Any]:
    return {"tenant": tenant, "definition_id": definition_id, "version": version}


def fold_definition(
    record: DefinitionRecord, at: Coordinates, state: DefinitionState | None
) -> DefinitionFolded:
    """A published version is immutable: the same hash again (a re-publish, a copy)
    changes nothing."""
    if state is not None and (
        not _after(at, state.partition, state.offset) or state.hash == record.hash
    ):
        return DefinitionFolded(state, (), applied=False)
    body: Mapping[str, Any] = record.definition
    trigger = body.get("trigger")
    trigger_type = trigger.get("event_type") if isinstance(trigger, dict) else None
    name = body.get("name")
    description = body.get("description")
    change = Upsert(
        DEFINITIONS,
        definition_key(record.tenant, record.definition_id, record.version),
        {
            "hash": record.hash,
            "name": name if isinstance(name, str) else None,
            # Optional in a definition, where its absence means "".
            "description": description if isinstance(description, str) else "",
            "trigger_event_type": trigger_type if isinstance(trigger_type, str) else None,
            "definition": record.definition,
            "published_at": record.published_at.astimezone(UTC),
            **at.provenance(None),
        },
    )
    return DefinitionFolded(DefinitionState(at.partition, at.offset, record.hash), (change,), True)


def parse_definition_key(key: str) -> dict[str, Any] | None:
    """``tenant:definition_id:version`` -> the row key, None when it does not parse."""
    parsed = parse_key(key)
    return None if parsed is None else definition_key(*parsed)


def fold_definition_tombstone(
    key: str, at: Coordinates, state: DefinitionState | None
) -> DefinitionFolded | None:
    """A compaction tombstone retracts a definition; None when the key is unreadable."""
    row_key = parse_definition_key(key)
    if row_key is None:
        return None
    if state is not None and not _after(at, state.partition, state.offset):
        return DefinitionFolded(state, (), applied=False)
    gone = DefinitionState(at.partition, at.offset, None)
    return DefinitionFolded(gone, (Delete(DEFINITIONS, row_key),), True)


def fold_operator_action(record: OperatorAction, at: Coordinates) -> tuple[Change, ...]:
    """One row per request, keyed by its action_id: a copy of the record (a producer
    retry, a replay) writes the same row again."""
    return (
        Upsert(
            OPERATOR_ACTIONS,
            {"action_id": str(record.action_id)},
            {
                "action": record.action,
                "tenant": record.tenant,
                "run_id": record.run_id,
                "task_id": record.task_id,
                "requested_by": record.requested_by,
                "requested_at": record.requested_at.astimezone(UTC),
                "reason": record.reason,
                "outcome": record.outcome,
                "code": record.code,
                "message": record.message,
                "details": record.details,
                **at.provenance(str(record.action_id)),
            },
        ),
    )
