"""JSON Schema export of every record model, committed under schemas/json/ so that
publishers in other languages can validate against the same contract. It lives in the
composition layer because the definition model belongs to `workflows`, above `schemas`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

import schemas
from flowledger.codes import SCHEMA_EMPTY
from flowledger.errors import FlowledgerError
from schemas.audit import AuditRecord
from schemas.definition_record import DefinitionRecord
from schemas.envelope import EventEnvelope
from schemas.operator import OperatorAction
from schemas.runtime import RuntimeEvent
from schemas.schedule import ScheduleEvent
from workflows.definitions.model import definition_json_schema

JSON_DIR = Path(schemas.__file__).resolve().parent / "json"


def _runtime() -> dict[str, Any]:
    return TypeAdapter(RuntimeEvent).json_schema()


EXPORTS: dict[str, Callable[[], dict[str, Any]]] = {
    "event-envelope.schema.json": EventEnvelope.model_json_schema,
    "audit-record.schema.json": AuditRecord.model_json_schema,
    "runtime-event.schema.json": _runtime,
    "definition-record.schema.json": DefinitionRecord.model_json_schema,
    "definition.schema.json": definition_json_schema,
    "operator-action.schema.json": OperatorAction.model_json_schema,
    "schedule-event.schema.json": ScheduleEvent.model_json_schema,
}


def render() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, build in EXPORTS.items():
        schema = build()
        if not schema:
            # A schema that cannot be built is a failure of `schemas check`, never a skip.
            raise FlowledgerError(f"the schema {name} came out empty", code=SCHEMA_EMPTY)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        out[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = JSON_DIR) -> list[str]:
    """Names whose committed file differs from what the models produce now."""
    problems = []
    for name, text in render().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            problems.append(name)
    return problems
