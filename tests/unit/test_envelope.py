"""The ingress envelope: round trips and every refusal, with the field and reason."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import EventEnvelope
from topics.publisher import parse_lines
from topics.serde import RecordRefused, decode_envelope, encode


def envelope(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "6f1c2a3e-0000-4000-8000-000000000001",
        "event_type": "ticket.updated",
        "tenant": "acme",
        "occurred_at": "2026-01-02T03:04:05Z",
        "payload": {"ticketId": "T-1"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def test_round_trip_keeps_every_field() -> None:
    raw = envelope(
        workflow_correlation_key="T-1",
        user_id="u1",
        source="crm",
        payload_schema_ref="ticket/v1",
        schema_version=2,
        event_name="Ticket updated",
    )
    decoded = decode_envelope(json.dumps(raw))
    again = decode_envelope(encode(decoded))
    assert again == decoded
    assert again.event_name == "Ticket updated"
    assert again.occurred_at.utcoffset() is not None


def test_event_name_defaults_to_event_type() -> None:
    assert decode_envelope(json.dumps(envelope())).event_name == "ticket.updated"


def test_default_key_is_tenant_and_event_id() -> None:
    decoded = decode_envelope(json.dumps(envelope()))
    assert decoded.default_key() == "acme:6f1c2a3e-0000-4000-8000-000000000001"


@pytest.mark.parametrize("missing", ["tenant", "event_id", "event_type", "occurred_at"])
def test_required_fields(missing: str) -> None:
    with pytest.raises(RecordRefused) as caught:
        decode_envelope(json.dumps(envelope(**{missing: ...})))
    assert caught.value.context["field"] == missing
    assert caught.value.context["reason"] == "required field is missing"


def test_unknown_field_is_refused_not_dropped() -> None:
    with pytest.raises(RecordRefused) as caught:
        decode_envelope(json.dumps(envelope(colour="red")))
    assert caught.value.context["field"] == "colour"
    assert caught.value.context["reason"] == "unknown field"


def test_timestamp_without_offset_is_refused() -> None:
    with pytest.raises(RecordRefused) as caught:
        decode_envelope(json.dumps(envelope(occurred_at="2026-01-02T03:04:05")))
    assert caught.value.context["field"] == "occurred_at"
    assert "offset" in caught.value.context["reason"]


def test_not_json() -> None:
    with pytest.raises(RecordRefused) as caught:
        decode_envelope("{not json")
    assert caught.value.code == "RECORD_NOT_JSON"


def test_not_an_object() -> None:
    with pytest.raises(RecordRefused) as caught:
        decode_envelope("[1, 2]")
    assert caught.value.context["reason"] == "not an object"


@pytest.mark.parametrize("bad", ["", "   "])
def test_blank_tenant(bad: str) -> None:
    with pytest.raises(RecordRefused) as caught:
        decode_envelope(json.dumps(envelope(tenant=bad)))
    assert caught.value.context["field"] == "tenant"


def test_event_id_must_be_uuid() -> None:
    with pytest.raises(RecordRefused) as caught:
        decode_envelope(json.dumps(envelope(event_id="nope")))
    assert caught.value.context["field"] == "event_id"


def test_envelope_is_frozen() -> None:
    decoded = decode_envelope(json.dumps(envelope()))
    with pytest.raises(ValueError):
        decoded.tenant = "other"  # type: ignore[misc]


def test_ndjson_keeps_good_lines_and_numbers_bad_ones() -> None:
    lines = [
        json.dumps(envelope(event_id=str(uuid.uuid4()))),
        "{broken",
        "",
        json.dumps(envelope(event_id=str(uuid.uuid4()), colour="red")),
        json.dumps(envelope(event_id=str(uuid.uuid4()))),
    ]
    parsed = parse_lines("\n".join(lines))
    kinds = [(n, type(item).__name__) for n, item in parsed]
    assert kinds == [
        (1, "EventEnvelope"),
        (2, "RecordRefused"),
        (4, "RecordRefused"),
        (5, "EventEnvelope"),
    ]


def test_single_pretty_printed_document() -> None:
    parsed = parse_lines(json.dumps(envelope(), indent=2))
    assert len(parsed) == 1 and isinstance(parsed[0][1], EventEnvelope)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_is_an_envelope_or_a_refusal(text: str) -> None:
    try:
        decode_envelope(text)
    except RecordRefused as exc:
        # Empty text, NaN and the like have codes of their own since issue 12.
        assert exc.code.startswith("RECORD_")
