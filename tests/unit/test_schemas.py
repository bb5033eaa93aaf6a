"""Records: runtime events discriminate on type, ids are deterministic, and the
committed JSON Schema files match the models."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from flowledger import schema_export as export
from schemas.runtime import (
    RUNTIME_EVENT_ADAPTER,
    RUNTIME_EVENT_TYPES,
    RUNTIME_NAMESPACE,
    RunCompleted,
    runtime_event_id,
)
from topics.serde import RecordRefused, decode_runtime, encode_runtime


def test_committed_json_schemas_are_fresh() -> None:
    assert export.stale() == [], "run `flowledger schemas export` and commit schemas/json/"


def test_runtime_event_ids_are_deterministic() -> None:
    assert runtime_event_id("r1", 3) == runtime_event_id("r1", 3)
    assert runtime_event_id("r1", 3) != runtime_event_id("r1", 4)


def test_runtime_event_ids_are_uuid5_of_run_and_seq() -> None:
    # Consumers de-duplicate on these ids across versions: they must never change.
    for run_id, seq in [("r1", 1), ("0b6e4c1f-run", 123_456), ("é-run", 7)]:
        assert runtime_event_id(run_id, seq) == uuid.uuid5(RUNTIME_NAMESPACE, f"{run_id}:{seq}")


def test_runtime_event_round_trip() -> None:
    event = RunCompleted(
        event_id=runtime_event_id("r1", 9),
        run_id="r1",
        tenant="acme",
        seq=9,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        data={"status": "SUCCEEDED", "output": 1},
    )
    assert decode_runtime(encode_runtime(event)) == event


def test_every_type_is_in_the_union() -> None:
    schema = RUNTIME_EVENT_ADAPTER.json_schema()
    assert set(schema["discriminator"]["mapping"]) == set(RUNTIME_EVENT_TYPES)


def test_unknown_runtime_type_is_refused() -> None:
    raw = {
        "event_id": str(uuid.uuid4()),
        "run_id": "r",
        "tenant": "t",
        "seq": 1,
        "occurred_at": "2026-01-01T00:00:00Z",
        "type": "Nope",
        "data": {},
    }
    with pytest.raises(RecordRefused):
        decode_runtime(json.dumps(raw))
