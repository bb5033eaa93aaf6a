"""Triggered starts, pure: which published definitions an event starts, under which
workflow id and run id, and with which input (payload_mapping evaluated by the shared
expression module)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowledger.settings import Settings
from processors.codes import TRIGGER_MAPPING_INVALID
from schemas.definition_record import DefinitionRecord, parse_definition_key
from workflows.expressions import ExpressionError, compile_with

# Fixed so that the run id of a triggered run is the same on every redelivery.
TRIGGER_NAMESPACE = uuid.UUID("0c4d7f0e-6a43-5b8e-8f1e-3d2a9b7c5e10")


def trigger_workflow_id(tenant: str, definition_id: str, event_id: str) -> str:
    return f"flowledger:trigger:{tenant}:{definition_id}:{event_id}"


def trigger_run_id(workflow_id: str) -> str:
    return str(uuid.uuid5(TRIGGER_NAMESPACE, workflow_id))


def trigger_event_type(record: DefinitionRecord) -> str | None:
    trigger = record.definition.get("trigger")
    if not isinstance(trigger, dict) or trigger.get("type", "event") != "event":
        return None
    event_type = trigger.get("event_type")
    return event_type if isinstance(event_type, str) and event_type else None


@dataclass
class TriggerIndex:
    """The latest published version of every definition, by (tenant, definition_id)."""

    latest: dict[tuple[str, str], DefinitionRecord] = field(default_factory=dict)
    # Every version seen, so a tombstone of the latest one falls back to the one before.
    versions: dict[tuple[str, str], dict[int, DefinitionRecord]] = field(default_factory=dict)
    # (tenant, event_type) -> the latest records it triggers, by definition id: looked
    # up once per event, so it must not scan every definition.
    by_event: dict[tuple[str, str], dict[str, DefinitionRecord]] = field(default_factory=dict)

    def apply(self, record: DefinitionRecord) -> None:
        ident = (record.tenant, record.definition_id)
        self.versions.setdefault(ident, {})[record.version] = record
        self._refresh(ident)

    def apply_tombstone(self, key: str) -> None:
        parsed = parse_definition_key(key)
        if parsed is None:
            return
        tenant, definition_id, version = parsed
        ident = (tenant, definition_id)
        self.versions.get(ident, {}).pop(version, None)
        self._refresh(ident)

    def _refresh(self, ident: tuple[str, str]) -> None:
        previous = self.latest.get(ident)
        if previous is not None:
            self._unlist(previous)
        known = self.versions.get(ident) or {}
        if known:
            current = self.latest[ident] = known[max(known)]
            event_type = trigger_event_type(current)
            if event_type is not None:
                bucket = self.by_event.setdefault((current.tenant, event_type), {})
                bucket[current.definition_id] = current
        else:
            self.latest.pop(ident, None)
            self.versions.pop(ident, None)

    def _unlist(self, record: DefinitionRecord) -> None:
        event_type = trigger_event_type(record)
        if event_type is None:
            return
        bucket = self.by_event.get((record.tenant, event_type))
        if bucket is not None:
            bucket.pop(record.definition_id, None)
            if not bucket:
                del self.by_event[(record.tenant, event_type)]

    def triggered_by(self, tenant: str, event_type: str) -> list[DefinitionRecord]:
        bucket = self.by_event.get((tenant, event_type))
        if not bucket:
            return []
        return [bucket[d] for d in sorted(bucket)]


class MappingFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def map_input(
    record: DefinitionRecord, event: dict[str, Any], settings: Settings, clock: datetime
) -> dict[str, Any]:
    """The run input: each payload_mapping value is an expression or a JSON literal,
    evaluated against {"event": {...}}. Raises MappingFailed with the expression's code."""
    trigger = record.definition.get("trigger")
    mapping = trigger.get("payload_mapping") if isinstance(trigger, dict) else None
    if not mapping:
        return {}
    if not isinstance(mapping, dict):
        raise MappingFailed(TRIGGER_MAPPING_INVALID, "payload_mapping is not an object")
    context = {"event": event}
    out: dict[str, Any] = {}
    for name, value in mapping.items():
        if isinstance(value, dict) and set(value) == {"$expr"}:
            try:
                out[name] = compile_with(value["$expr"], settings).evaluate(context, clock)
            except ExpressionError as exc:
                raise MappingFailed(exc.code, f"payload_mapping.{name}: {exc.message}") from exc
        else:
            out[name] = value
    return out
