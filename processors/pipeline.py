"""What to do with one ingress record, decided without I/O: refuse it, skip it as
already done, or signal these waits, hold it for a wait not seen yet, start these
triggered runs, and audit it like this."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flowledger import tracing
from flowledger.settings import RecordSettings
from processors.codes import CORRELATION_MISSING, PROCESSING_FAILED, TRIGGER_MAPPING_FAILED
from processors.correlation import Correlation, CorrelationPaths, resolve
from processors.router_index import OpenWait, RouterIndex, eligible
from processors.triggers import TriggerIndex, trigger_run_id, trigger_workflow_id
from schemas.audit import AuditRecord, Delivery
from schemas.bounded_json import RecordRefused, parse_json
from schemas.definition_record import DefinitionRecord
from schemas.envelope import EventEnvelope
from topics.serde import decode_envelope
from workflows.messages import DeliveredEvent

# Something unexpected went wrong while handling one record: a bug to show (the record
# is dead-lettered with the exception), never a reason to stop the partition.
# What an audit or a dead letter repeats of an error message, at most.
MESSAGE_CHARS = 2000
EXCERPT_CHARS = 2000


@dataclass(frozen=True)
class IngressRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # The broker's timestamp: when Kafka received the event. Used as received_at, so
    # a redelivered record produces exactly the same audit and signal.
    timestamp: datetime
    # The record's Kafka headers, as they came (a dead letter keeps them).
    headers: tuple[tuple[str, bytes | None], ...] = ()
    # Partitioned routing: the partition and offset of its copy on the routing topic,
    # which the router consumes and commits (the fields above stay the ingress record's).
    routed: tuple[int, int] | None = None

    @property
    def at(self) -> tuple[int, int]:
        """Where the processor consumed this record: the copy's place, or its own."""
        return self.routed if self.routed is not None else (self.partition, self.offset)

    @property
    def traceparent(self) -> str | None:
        return tracing.header(self.headers)


@dataclass(frozen=True)
class SignalTarget:
    run_id: str
    wait_id: str
    workflow_id: str


@dataclass(frozen=True)
class StartTarget:
    record: DefinitionRecord
    workflow_id: str
    run_id: str


@dataclass
class Plan:
    record: IngressRecord
    audit: AuditRecord
    completion_key: str
    envelope: EventEnvelope | None = None
    refused: RecordRefused | None = None
    duplicate: bool = False
    correlation: Correlation | None = None
    signals: list[SignalTarget] = field(default_factory=list)
    # Waits this event already resolved (seen on the runtime topic): a redelivery after
    # a crash reports them without signalling again.
    already_delivered: list[Delivery] = field(default_factory=list)
    hold: bool = False
    starts: list[StartTarget] = field(default_factory=list)
    # Set when carrying out the plan went wrong for this record (a trigger mapping, an
    # unexpected exception): it is dead-lettered and audited with this error.
    failure: RecordRefused | None = None

    def fail(self, error: RecordRefused) -> None:
        if self.failure is None:
            self.failure = error
            self.audit = self.audit.model_copy(
                update={"error_code": error.code, "error_message": error.message[:MESSAGE_CHARS]}
            )

    @property
    def rejected(self) -> RecordRefused | None:
        """Why this record goes to the dead letters, if it does."""
        return self.refused or self.failure

    def done_key(self) -> str:
        """What marks this record as done: the event, or only its coordinates when it
        failed (so a redriven copy, once fixed, is still processed)."""
        if self.failure is None:
            return self.completion_key
        r = self.record
        return coordinate_completion_key(r.topic, r.partition, r.offset)

    def delivered_event(self) -> DeliveredEvent:
        assert self.envelope is not None and self.correlation is not None
        return DeliveredEvent(
            event_id=str(self.envelope.event_id),
            event_type=self.envelope.event_type,
            correlation_key=self.correlation.key,
            payload=self.envelope.payload,
            received_at=self.audit.received_at.isoformat(),
            traceparent=self.record.traceparent,
        )

    def trigger_context(self) -> dict[str, Any]:
        assert self.envelope is not None and self.correlation is not None
        e = self.envelope
        return {
            "event_id": str(e.event_id),
            "event_type": e.event_type,
            "tenant": e.tenant,
            "correlation_key": self.correlation.key,
            "payload": e.payload,
            "occurred_at": e.occurred_at.isoformat(),
        }


def event_completion_key(tenant: str, event_id: str) -> str:
    return f"event:{tenant}:{event_id}"


def coordinate_completion_key(topic: str, partition: int, offset: int) -> str:
    return f"at:{topic}:{partition}:{offset}"


def audit_completion_keys(audit: AuditRecord) -> list[str]:
    """The keys an audit record (not a held one) marks as done. A refused record marks
    only its coordinates: a valid copy of the same event elsewhere is still to do."""
    keys = [
        coordinate_completion_key(audit.source_topic, audit.source_partition, audit.source_offset)
    ]
    code = audit.error_code or ""
    refused = code.startswith("RECORD_") or code in (PROCESSING_FAILED, TRIGGER_MAPPING_FAILED)
    if audit.tenant and audit.event_id and not refused:
        keys.append(event_completion_key(audit.tenant, audit.event_id))
    return keys


def _best_effort(raw: bytes | None, limits: RecordSettings) -> dict[str, Any]:
    """What a refused record says about itself, for the audit; never the event id, so
    a poison copy is not merged with the real event's audit row."""
    try:
        data = parse_json(raw, max_bytes=limits.max_bytes, max_depth=limits.max_depth)
    except RecordRefused:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k][:200] for k in ("tenant", "event_type") if isinstance(data.get(k), str)}


def _bounded_payload(body: dict[str, Any], raw_size: int, limit: int) -> dict[str, Any]:
    """The envelope's payload for its audit: itself when small, else its digest, size and
    an excerpt, so the audit record stays under the topic's size limit."""
    payload = body.get("payload")
    # Re-encoding never grows a payload much past the raw record it came from.
    if payload is None or raw_size * 4 <= limit:
        return {}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return {}
    return {
        "payload": None,
        "payload_sha256": hashlib.sha256(encoded).hexdigest(),
        "payload_bytes": len(encoded),
        "payload_excerpt": text[:EXCERPT_CHARS],
    }


def _base_audit(record: IngressRecord) -> dict[str, Any]:
    return {
        "received_at": record.timestamp,
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
    }


def decide(
    record: IngressRecord,
    *,
    index: RouterIndex,
    triggers: TriggerIndex,
    completed: Container[str],
    paths: CorrelationPaths,
    skew: timedelta,
    window: timedelta,
    now: datetime,
    limits: RecordSettings | None = None,
) -> Plan:
    """The plan for one record. Never raises: a record that makes any step fail
    unexpectedly is refused as PROCESSING_FAILED, so it cannot stop its partition."""
    limits = limits or RecordSettings()
    try:
        try:
            envelope = decode_envelope(record.value, limits)
        except RecordRefused as exc:
            return refused_plan(record, exc, completed, limits)

        event_id = str(envelope.event_id)
        key = event_completion_key(envelope.tenant, event_id)
        body = envelope.model_dump(mode="json")
        correlation = resolve(body, paths)
        body.update(
            _bounded_payload(body, len(record.value or b""), limits.audit_payload_max_bytes)
        )
        audit = AuditRecord(
            **body,
            correlation_key=correlation.key,
            correlation_source=correlation.source,
            correlation_detail=correlation.detail,
            error_code=None if correlation.key is not None else CORRELATION_MISSING,
            error_message=None if correlation.key is not None else correlation.detail,
            **_base_audit(record),
        )
        plan = Plan(record, audit, key, envelope=envelope, correlation=correlation)
        if key in completed:
            plan.duplicate = True
            return plan

        if correlation.key is not None:
            already = index.resolved_by.get((envelope.tenant, event_id), [])
            done_waits = {wait_id for _run, wait_id in already}
            plan.already_delivered = [
                Delivery(run_id=run, wait_id=wait, kind="signal", outcome="delivered")
                for run, wait in already
            ]
            waits: list[OpenWait] = [
                w
                for w in index.matching(envelope.tenant, envelope.event_type, correlation.key)
                if w.wait_id not in done_waits and eligible(w, record.timestamp, skew)
            ]
            plan.signals = [
                SignalTarget(w.run_id, w.wait_id, index.workflow_id(w.run_id)) for w in waits
            ]
            plan.hold = not waits and not already and record.timestamp + window > now

        for definition in triggers.triggered_by(envelope.tenant, envelope.event_type):
            workflow_id = trigger_workflow_id(envelope.tenant, definition.definition_id, event_id)
            plan.starts.append(StartTarget(definition, workflow_id, trigger_run_id(workflow_id)))
        return plan
    except Exception as exc:
        return refused_plan(record, processing_failed(exc), completed, limits)


def processing_failed(exc: BaseException) -> RecordRefused:
    kind = type(exc).__name__
    return RecordRefused(
        f"handling the record failed: {kind}: {str(exc)[:MESSAGE_CHARS]}",
        code=PROCESSING_FAILED,
        field="(record)",
        reason=kind,
        exception=kind,
    )


def refused_plan(
    record: IngressRecord, exc: RecordRefused, completed: Container[str], limits: RecordSettings
) -> Plan:
    audit = AuditRecord(
        **_best_effort(record.value, limits),
        error_code=exc.code,
        error_message=exc.message[:MESSAGE_CHARS],
        **_base_audit(record),
    )
    key = coordinate_completion_key(record.topic, record.partition, record.offset)
    return Plan(record, audit, key, refused=exc, duplicate=key in completed)


def utc_from_ms(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)


def plan_from_held_audit(
    audit: AuditRecord, completion_key: str, routed: tuple[int, int] | None = None
) -> Plan:
    """A held event again, from its held audit record, after a restart or rebalance:
    the audit carries the whole envelope, the correlation and the source coordinates."""
    fields = set(EventEnvelope.model_fields)
    envelope = EventEnvelope.model_validate(
        {k: v for k, v in audit.model_dump(mode="json").items() if k in fields}
    )
    correlation = Correlation(
        audit.correlation_key, audit.correlation_source or "missing", audit.correlation_detail or ""
    )
    record = IngressRecord(
        audit.source_topic,
        audit.source_partition,
        audit.source_offset,
        None,
        None,
        audit.received_at,
        routed=routed,
    )
    return Plan(
        record, audit, completion_key, envelope=envelope, correlation=correlation, hold=True
    )
