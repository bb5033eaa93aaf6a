"""Audit records on flowledger.audit.v1: keyed tenant:event_id, one per event. An
event held for a wait not seen yet is audited at once with a `held` header (not yet
complete) and again, complete, when it is delivered or its window ends."""

from __future__ import annotations

from processors.pipeline import Plan
from topics.producing import Outgoing
from topics.serde import encode

HELD_HEADER = "flowledger.held"


def audit_key(plan: Plan) -> bytes:
    audit = plan.audit
    if audit.tenant and audit.event_id:
        return f"{audit.tenant}:{audit.event_id}".encode()
    if plan.record.key:
        return plan.record.key
    return f"ingress:{audit.source_topic}:{audit.source_partition}:{audit.source_offset}".encode()


def outgoing(topic: str, plan: Plan, held: bool) -> Outgoing:
    return Outgoing(topic, audit_key(plan), encode(plan.audit), headers(held))


def headers(held: bool) -> list[tuple[str, str | bytes | None]]:
    return [(HELD_HEADER, b"true")] if held else []


def is_held(raw_headers: object) -> bool:
    if isinstance(raw_headers, dict):
        return raw_headers.get(HELD_HEADER) in (b"true", "true")
    if isinstance(raw_headers, list):
        return any(item == (HELD_HEADER, b"true") for item in raw_headers)
    return False
