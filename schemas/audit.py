"""The ingress audit record: one per record read from flowledger.events.v1, valid or
not, saying how it was correlated and where it was delivered."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from schemas.base import Record, Timestamp

CorrelationSource = Literal["explicit", "derived", "missing"]


class Delivery(Record):
    run_id: str
    wait_id: str | None = None
    kind: Literal["signal", "start"]
    outcome: str = Field(description="e.g. delivered, started, already_started, duplicate, failed")


class AuditRecord(Record):
    # Envelope fields are optional: an invalid record is audited too, with
    # whatever could be read from it.
    event_id: str | None = None
    event_type: str | None = None
    event_name: str | None = None
    tenant: str | None = None
    occurred_at: str | None = None
    workflow_correlation_key: str | None = None
    payload: dict[str, Any] | None = None
    # Set instead of `payload` when the payload is larger than an audit keeps: the
    # whole of it stays on the ingress topic at the source coordinates below.
    payload_sha256: str | None = None
    payload_bytes: int | None = Field(default=None, ge=0)
    payload_excerpt: str | None = None
    user_id: str | None = None
    source: str | None = None
    payload_schema_ref: str | None = None
    schema_version: int | None = None

    correlation_key: str | None = None
    correlation_source: CorrelationSource | None = None
    correlation_detail: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    deliveries: list[Delivery] = Field(default_factory=list)
    expired: bool = Field(
        default=False,
        description="held for the early-event window, and no wait took it within it",
    )
    received_at: Timestamp
    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
