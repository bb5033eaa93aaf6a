"""Kafka records as the write path sees them, and their decoding into typed records
or refusals. Pure: nothing here reads a database or a topic."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import ValidationError

from projections.changes import Coordinates
from projections.codes import RECORD_KEY_INVALID
from projections.fold_ingress import fold_definition_tombstone
from schemas.audit import AuditRecord
from schemas.codes import RECORD_EMPTY
from schemas.definition_record import DefinitionRecord
from schemas.operator import OperatorAction
from schemas.runtime import RUNTIME_EVENT_ADAPTER, RuntimeEvent
from schemas.schedule import ScheduleEvent
from topics.serde import (
    RecordRefused,
    decode_audit,
    decode_definition,
    decode_operator_action,
    decode_runtime_topic,
)

Kind = Literal["runtime", "audit", "definitions", "operators"]
Slot = tuple[str, int]  # (topic, partition)


class Incoming(NamedTuple):
    """One Kafka record as the applier sees it."""

    kind: Kind
    at: Coordinates
    key: bytes | None
    value: bytes | None
    # The record's `traceparent` header: the projector's batch span links to it.
    traceparent: str | None = None


@dataclass(frozen=True)
class Refusal:
    at: Coordinates
    key: bytes | None
    value: bytes | None
    code: str
    reason: str
    problems: list[dict[str, Any]] | None = None


Typed = RuntimeEvent | ScheduleEvent | AuditRecord | DefinitionRecord | OperatorAction
Decoded = tuple[Incoming, Typed | None]


def slot(record: Incoming) -> Slot:
    return (record.at.topic, record.at.partition)


def ends(records: Sequence[Incoming]) -> dict[Slot, int]:
    """The offset after the last record of each partition."""
    out: dict[Slot, int] = {}
    for r in records:
        at = (r.at.topic, r.at.partition)
        out[at] = max(out.get(at, 0), r.at.offset + 1)
    return out


def _decode(
    item: Incoming,
) -> Typed | None:
    """The typed record; None for a definitions tombstone; raises RecordRefused."""
    value = item.value
    if value is None:
        if item.kind == "definitions":
            return None
        raise RecordRefused("record has no value", code=RECORD_EMPTY, reason="null value")
    # The JSON-native validators are the fast path; serde's decoders run only on a
    # failure, to produce the same refusal (field and reason) as everywhere else.
    with contextlib.suppress(ValidationError):
        if item.kind == "runtime":
            return RUNTIME_EVENT_ADAPTER.validate_json(value)
        if item.kind == "audit":
            return AuditRecord.model_validate_json(value)
        if item.kind == "operators":
            return OperatorAction.model_validate_json(value)
        return DefinitionRecord.model_validate_json(value)
    if item.kind == "runtime":
        # A schedule event shares the runtime topic (schemas/schedule.py).
        return decode_runtime_topic(value)
    if item.kind == "audit":
        return decode_audit(value)
    if item.kind == "operators":
        return decode_operator_action(value)
    return decode_definition(value)


def decode_all(items: Sequence[Incoming]) -> tuple[list[Decoded], list[Refusal]]:
    decoded: list[Decoded] = []
    refused: list[Refusal] = []
    for item in items:
        try:
            record = _decode(item)
        except RecordRefused as exc:
            problems = exc.context.get("problems")
            refused.append(Refusal(item.at, item.key, item.value, exc.code, exc.message, problems))
            continue
        if (
            record is None
            and fold_definition_tombstone(
                (item.key or b"").decode("utf-8", errors="replace"), item.at, None
            )
            is None
        ):
            refused.append(
                Refusal(
                    item.at,
                    item.key,
                    None,
                    RECORD_KEY_INVALID,
                    "definitions tombstone whose key is not tenant:definition_id:version",
                )
            )
            continue
        decoded.append((item, record))
    return decoded, refused
