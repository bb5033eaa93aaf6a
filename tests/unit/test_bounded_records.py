"""Hostile records: each is refused with its own code, and no record can make the
per-record decision raise (issue 12, invariant 6)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowledger.settings import RecordSettings
from processors import deadletter
from processors.correlation import NO_PATHS
from processors.pipeline import IngressRecord, Plan, decide, processing_failed
from processors.router_index import RouterIndex
from processors.triggers import TriggerIndex
from schemas.bounded_json import RecordRefused, parse_json
from topics.serde import encode

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LIMITS = RecordSettings(max_bytes=32_768, max_depth=16, audit_payload_max_bytes=1024)


def envelope(payload: Any = None, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "paid",
        "tenant": "acme",
        "occurred_at": T0.isoformat(),
        "payload": {} if payload is None else payload,
        **fields,
    }


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def plan(
    value: bytes | None, limits: RecordSettings = LIMITS, triggers: TriggerIndex | None = None
) -> Plan:
    return decide(
        IngressRecord("events", 0, 7, b"k", value, T0),
        index=RouterIndex(),
        triggers=triggers or TriggerIndex(),
        completed=set(),
        paths=NO_PATHS,
        skew=timedelta(seconds=2),
        window=timedelta(minutes=10),
        now=T0,
        limits=limits,
    )


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "RECORD_EMPTY"),
        (b"", "RECORD_EMPTY"),
        (b"\xff\xfe{}", "RECORD_NOT_UTF8"),
        (b"{not json", "RECORD_NOT_JSON"),
        (b"[" * 10_000 + b"]" * 10_000, "RECORD_TOO_DEEP"),
        (json.dumps(envelope(nested(20))).encode(), "RECORD_TOO_DEEP"),
        (b'{"payload": ' + b"1" * 5001 + b"}", "RECORD_NUMBER_TOO_LARGE"),
        (json.dumps(envelope({"n": 2**64})).encode(), "RECORD_NUMBER_TOO_LARGE"),
        (b'{"payload": {"x": NaN}}', "RECORD_NUMBER_NOT_FINITE"),
        (b'{"payload": {"x": -Infinity}}', "RECORD_NUMBER_NOT_FINITE"),
        (b'{"payload": {"x": 1e400}}', "RECORD_NUMBER_NOT_FINITE"),
        (json.dumps(envelope({"s": "x" * 40_000})).encode(), "RECORD_TOO_LARGE"),
    ],
)
def test_each_hostile_record_has_its_own_code(value: bytes | None, code: str) -> None:
    p = plan(value)
    assert p.refused is not None and p.refused.code == code
    assert p.audit.error_code == code
    assert p.completion_key == "at:events:0:7"


def test_records_at_the_limits_pass() -> None:
    body = envelope(nested(14), extra_pad="")
    del body["extra_pad"]
    text = json.dumps(body).encode()
    assert plan(text).refused is None
    value = json.dumps(envelope({"n": 2**63 - 1, "m": -(2**63), "f": 1.5})).encode()
    assert plan(value).refused is None


def test_exactly_the_size_limit_is_accepted_one_more_byte_is_not() -> None:
    def sized(n: int) -> bytes:
        body = envelope({"s": ""})
        base = len(json.dumps(body).encode())
        body["payload"]["s"] = "x" * (n - base)
        out = json.dumps(body).encode()
        assert len(out) == n
        return out

    assert plan(sized(32_768)).refused is None
    p = plan(sized(32_769))
    assert p.refused is not None and p.refused.code == "RECORD_TOO_LARGE"


def test_large_payload_is_audited_as_digest_and_excerpt() -> None:
    body = envelope({"s": "y" * 3000})
    p = plan(json.dumps(body).encode())
    assert p.refused is None
    assert p.audit.payload is None
    assert p.audit.payload_bytes is not None and p.audit.payload_bytes > 3000
    assert p.audit.payload_sha256 is not None and len(p.audit.payload_sha256) == 64
    assert p.audit.payload_excerpt is not None and p.audit.payload_excerpt.startswith('{"s":')
    assert len(encode(p.audit)) < 4096


def test_small_payload_stays_in_the_audit() -> None:
    p = plan(json.dumps(envelope({"n": 1})).encode())
    assert p.audit.payload == {"n": 1} and p.audit.payload_sha256 is None


def test_dead_letter_of_an_oversized_record_is_an_excerpt() -> None:
    raw = b"z" * 40_000
    record = IngressRecord("events", 2, 9, None, raw, T0)
    value = deadletter.value(record, LIMITS)
    assert value is not None and len(value) < 4096
    doc = json.loads(value)
    assert doc["bytes"] == 40_000 and doc["source"] == {
        "topic": "events",
        "partition": 2,
        "offset": 9,
    }
    p = plan(raw)
    assert p.refused is not None
    names = dict(deadletter.headers(record, p.refused, LIMITS))
    assert names[deadletter.VALUE] == b"excerpt"
    small = IngressRecord("events", 2, 9, None, b"{}", T0)
    assert deadletter.value(small, LIMITS) == b"{}"
    assert deadletter.value(IngressRecord("events", 2, 9, None, None, T0), LIMITS) is None


def test_processing_failed_names_the_exception() -> None:
    error = processing_failed(KeyError("boom"))
    assert error.code == "PROCESSING_FAILED"
    assert "KeyError" in error.message and error.context["exception"] == "KeyError"


def test_an_unexpected_failure_is_refused_not_raised() -> None:
    class Exploding(TriggerIndex):
        def triggered_by(self, tenant: str, event_type: str) -> list[Any]:
            raise RuntimeError("a bug")

    p = plan(json.dumps(envelope()).encode(), triggers=Exploding())
    assert p.refused is not None and p.refused.code == "PROCESSING_FAILED"
    assert "RuntimeError: a bug" in (p.audit.error_message or "")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | st.none())
def test_no_bytes_make_decide_raise(value: bytes | None) -> None:
    p = plan(value)
    assert p.refused is not None or p.envelope is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_payload_is_processed_or_refused_with_a_code(payload: Any) -> None:
    text = json.dumps(envelope({"v": payload}), allow_nan=True).encode()
    p = plan(text)
    if p.refused is not None:
        assert p.refused.code.startswith("RECORD_")
    else:
        # What was accepted comes back exactly.
        assert p.envelope is not None and p.envelope.payload == {"v": payload}


def test_parse_json_bounds_cli_input_too() -> None:
    with pytest.raises(RecordRefused) as caught:
        parse_json("[" * 100 + "]" * 100, max_depth=10)
    assert caught.value.code == "RECORD_TOO_DEEP"
