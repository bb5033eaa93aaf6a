"""JSON serde for every record on flowledger topics. Decoding validates against the
schemas and names the field and reason of every refusal."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from flowledger.settings import RecordSettings
from schemas.audit import AuditRecord
from schemas.bounded_json import RecordRefused, parse_json
from schemas.definition_record import DefinitionRecord
from schemas.envelope import EventEnvelope
from schemas.operator import OperatorAction
from schemas.runtime import RUNTIME_EVENT_ADAPTER, RuntimeEvent
from schemas.schedule import ScheduleEvent, is_schedule_event

M = TypeVar("M", bound=BaseModel)


# RecordRefused is re-exported: every reader of a topic catches it from here.
__all__ = [
    "RecordRefused",
    "decode_audit",
    "decode_definition",
    "decode_envelope",
    "decode_operator_action",
    "decode_runtime",
    "decode_runtime_topic",
    "encode",
    "encode_runtime",
    "envelope_from_obj",
]


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json(exclude_none=False).encode("utf-8")


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "(record)"
        reason = error["msg"]
        if error["type"] == "extra_forbidden":
            reason = "unknown field"
        elif error["type"] == "missing":
            reason = "required field is missing"
        elif error["type"] == "timezone_aware":
            reason = "timestamp must carry a UTC offset (e.g. Z or +02:00)"
        out.append({"field": field, "reason": reason})
    return out


def _parse_json(raw: bytes | str) -> Any:
    """Our own topics' records: bounded in depth only (the topic bounds their size)."""
    return parse_json(raw)


def _validate(model: type[M], data: Any, what: str) -> M:
    if not isinstance(data, dict):
        raise RecordRefused(
            f"{what} must be a JSON object, got {type(data).__name__}",
            field="(record)",
            reason="not an object",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
        first = problems[0]
        raise RecordRefused(
            f"{what} refused: {first['field']}: {first['reason']}",
            field=first["field"],
            reason=first["reason"],
            problems=problems,
        ) from exc


def decode_envelope(raw: bytes | str | None, limits: RecordSettings | None = None) -> EventEnvelope:
    """An envelope from outside: within the size and depth limits, numbers exact."""
    limits = limits or RecordSettings()
    data = parse_json(raw, max_bytes=limits.max_bytes, max_depth=limits.max_depth)
    return envelope_from_obj(data)


def envelope_from_obj(data: Any) -> EventEnvelope:
    return _validate(EventEnvelope, data, "event envelope")


def decode_runtime(raw: bytes | str) -> RuntimeEvent:
    return _runtime_event(_parse_json(raw))


def _runtime_event(data: Any) -> RuntimeEvent:
    try:
        return RUNTIME_EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = _problems(exc)
        raise RecordRefused(
            f"runtime event refused: {problems[0]['field']}: {problems[0]['reason']}",
            field=problems[0]["field"],
            reason=problems[0]["reason"],
            problems=problems,
        ) from exc


def decode_runtime_topic(raw: bytes | str) -> RuntimeEvent | ScheduleEvent:
    """Any record of flowledger.runtime.v1: a run's event or a schedule event."""
    data = _parse_json(raw)
    if is_schedule_event(data):
        return _validate(ScheduleEvent, data, "schedule event")
    return _runtime_event(data)


def encode_runtime(event: RuntimeEvent) -> bytes:
    return RUNTIME_EVENT_ADAPTER.dump_json(event)


def decode_audit(raw: bytes | str) -> AuditRecord:
    return _validate(AuditRecord, _parse_json(raw), "audit record")


def decode_definition(raw: bytes | str) -> DefinitionRecord:
    return _validate(DefinitionRecord, _parse_json(raw), "definition record")


def decode_operator_action(raw: bytes | str) -> OperatorAction:
    return _validate(OperatorAction, _parse_json(raw), "operator action")
