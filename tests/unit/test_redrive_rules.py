"""The pure side of dead letters and redrives: filters and selectors, FIXED.ndjson
matched to dead letters by coordinates, the loop guard, the headers a redriven record
carries, time arguments; and replay verify's verdict on refused records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from flowledger.errors import InvalidInput
from flowledger.settings import RecordSettings
from processors import deadletter
from processors import deadletter_headers as dh
from processors.pipeline import IngressRecord, Plan
from processors.redrive_rules import (
    DeadLetter,
    Filter,
    Selector,
    Sent,
    decide,
    listed,
    match_fixed,
    parse_coordinate,
    parse_fixed,
    parse_offsets,
    parse_time,
    pending,
    redriven_headers,
    select,
)
from projections.replay.verify import refusal_difference, verdict
from schemas.audit import AuditRecord
from schemas.bounded_json import RecordRefused

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIMITS = RecordSettings()


def letter(
    offset: int,
    reason: str = "RECORD_INVALID",
    *,
    count: int | None = None,
    tenant: str = "acme",
    failed: datetime = NOW,
    excerpt: bool = False,
    value: bytes | None = None,
) -> DeadLetter:
    headers: list[tuple[str, bytes | None]] = [
        ("traceparent", b"00-abc-def-01"),
        (dh.REASON, reason.encode()),
        (dh.ERROR, b"bad"),
        (dh.SOURCE_TOPIC, b"events"),
        (dh.SOURCE_PARTITION, b"3"),
        (dh.SOURCE_OFFSET, str(100 + offset).encode()),
        (dh.FAILED_AT, failed.isoformat().encode()),
    ]
    if count is not None:
        headers.append((dh.REDRIVE_COUNT, str(count).encode()))
    if excerpt:
        headers.append((dh.VALUE, b"excerpt"))
    body = value if value is not None else json.dumps({"tenant": tenant, "colour": "red"}).encode()
    return DeadLetter("dl", 0, offset, b"k", body, 0, tuple(headers))


def test_summary_has_the_contract_keys() -> None:
    s = letter(4, count=2).summary()
    assert (s["partition"], s["offset"], s["reason"], s["error"]) == (0, 4, "RECORD_INVALID", "bad")
    assert (s["source_topic"], s["source_partition"], s["source_offset"]) == ("events", 3, 104)
    assert s["redrive_count"] == 2 and s["tenant"] == "acme"
    detail = letter(4).detail()
    assert detail["headers"]["traceparent"] == "00-abc-def-01" and detail["key"] == "k"


def test_list_filters_by_reason_time_tenant_and_limit() -> None:
    letters = [
        letter(0, failed=NOW - timedelta(hours=2)),
        letter(1, "RECORD_NOT_JSON", failed=NOW - timedelta(hours=1)),
        letter(2, tenant="globex", failed=NOW),
    ]
    assert [d.offset for d in listed(letters, Filter(reason="RECORD_INVALID"))] == [0, 2]
    assert [d.offset for d in listed(letters, Filter(since=NOW - timedelta(minutes=90)))] == [1, 2]
    assert [d.offset for d in listed(letters, Filter(until=NOW - timedelta(minutes=90)))] == [0]
    assert [d.offset for d in listed(letters, Filter(tenant="globex"))] == [2]
    assert [d.offset for d in listed(letters, Filter(limit=2))] == [0, 1]


def test_selector_needs_exactly_one_choice() -> None:
    with pytest.raises(InvalidInput):
        Selector.of(None, None, False)
    with pytest.raises(InvalidInput):
        Selector.of("RECORD_INVALID", None, True)
    assert Selector.of(None, "0:1, 0:3", False).offsets == ((0, 1), (0, 3))
    with pytest.raises(InvalidInput):
        parse_offsets("0:x")
    with pytest.raises(InvalidInput):
        parse_coordinate("12")


def test_select_by_reason_offsets_or_all() -> None:
    letters = [letter(2), letter(0, "RECORD_NOT_JSON"), letter(1)]
    assert [d.offset for d in select(letters, Selector(reason="RECORD_INVALID"))] == [1, 2]
    assert [d.offset for d in select(letters, Selector(offsets=((0, 2), (0, 0))))] == [2, 0]
    assert [d.offset for d in select(letters, Selector(everything=True))] == [0, 1, 2]
    with pytest.raises(InvalidInput) as refused:
        select(letters, Selector(offsets=((0, 9),)))
    assert refused.value.code == "DEADLETTER_NOT_FOUND"


def test_fixed_records_match_by_their_own_or_the_originals_coordinates() -> None:
    selected = [letter(0), letter(1)]
    text = "\n".join(
        [
            json.dumps({"partition": 0, "offset": 1, "value": {"tenant": "acme"}}),
            "",
            json.dumps({"source_partition": 3, "source_offset": 100, "value": "raw text"}),
        ]
    )
    fixed = parse_fixed(text, LIMITS)
    matched = match_fixed(selected, fixed)
    assert matched[(0, 1)].value == b'{"tenant":"acme"}'
    assert matched[(0, 0)].value == b"raw text"


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        json.dumps({"partition": 0, "offset": 0}),
        json.dumps({"value": {}}),
        json.dumps({"partition": 0, "offset": 0, "value": 5}),
    ],
)
def test_unusable_fixed_lines_are_refused(line: str) -> None:
    with pytest.raises(InvalidInput):
        parse_fixed(line, LIMITS)


def test_a_fixed_record_must_match_one_selected_dead_letter_once() -> None:
    selected = [letter(0)]
    stray = parse_fixed(json.dumps({"partition": 0, "offset": 7, "value": {}}), LIMITS)
    with pytest.raises(InvalidInput):
        match_fixed(selected, stray)
    twice = parse_fixed(
        json.dumps({"partition": 0, "offset": 0, "value": {}})
        + "\n"
        + json.dumps({"source_partition": 3, "source_offset": 100, "value": {}}),
        LIMITS,
    )
    with pytest.raises(InvalidInput):
        match_fixed(selected, twice)


def test_the_loop_guard_and_progress_decide_what_is_sent() -> None:
    fresh, tired, done, big = (
        letter(0),
        letter(1, count=3),
        letter(2, count=1),
        letter(3, excerpt=True),
    )
    progress = {(0, 2): Sent("sent", "r1", 1, 4, 9), (0, 0): Sent("sending", "r1", 1)}
    decisions = decide([fresh, tired, done, big], {}, progress, max_redrives=3)
    assert [(d.letter.offset, d.skip) for d in decisions] == [
        (0, None),
        (1, "loop_guard"),
        (2, "already_redriven"),
        (3, "value_is_excerpt"),
    ]
    assert decisions[0].redrive_count == 1 and decisions[0].value == fresh.value
    assert pending(progress) == {(0, 0): progress[(0, 0)]}
    fixed = match_fixed(
        [big], parse_fixed(json.dumps({"partition": 0, "offset": 3, "value": {}}), LIMITS)
    )
    (corrected,) = decide([big], fixed, {}, max_redrives=3)
    assert corrected.send and corrected.corrected and corrected.value == b"{}"


def test_a_redriven_record_keeps_the_originals_headers_and_counts() -> None:
    headers = dict(redriven_headers(letter(5, count=1), 2))
    assert headers == {
        "traceparent": b"00-abc-def-01",
        dh.REDRIVE_COUNT: b"2",
        dh.REDRIVE_SOURCE: b"dl:0:5",
    }


def test_times_are_iso_or_ages() -> None:
    assert parse_time("15m", NOW) == NOW - timedelta(minutes=15)
    assert parse_time("2d", NOW) == NOW - timedelta(days=2)
    assert parse_time("2026-12-01T10:00:00", NOW) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_time("2026-12-01T10:00:00+01:00", NOW).hour == 10
    with pytest.raises(InvalidInput):
        parse_time("yesterday", NOW)


def test_verify_says_how_many_records_both_sides_refused() -> None:
    assert verdict(True, False, 0, 0, 0) == "identical"
    assert verdict(True, False, 2, 2, 0) == "identical; 2 records refused on both sides"
    assert verdict(True, False, 1, 1, 0) == "identical; 1 record refused on both sides"
    assert verdict(False, False, 2, 1, 2) == "2 differences; 2 refused live, 1 by the rebuild"
    assert refusal_difference(2, 2) is None
    fewer = refusal_difference(2, 1)
    assert fewer is not None and (fewer.live, fewer.rebuilt) == (2, 1)


def test_a_dead_letter_keeps_the_redrive_headers_and_adds_when_and_who() -> None:
    record = IngressRecord(
        "events",
        1,
        4,
        b"k",
        b"not json",
        NOW,
        (
            ("traceparent", b"tp"),
            (dh.REASON, b"OLD"),
            (dh.REDRIVE_COUNT, b"2"),
            (dh.REDRIVE_SOURCE, b"dl:0:3"),
        ),
    )
    refused = RecordRefused("not JSON", code="RECORD_NOT_JSON", field="(record)")
    later = NOW + timedelta(seconds=5)
    out = deadletter.headers(record, refused, LIMITS, group="g-1", failed_at=later)
    found = dict(out)
    assert [n for n, _v in out].count(dh.REASON) == 1 and found[dh.REASON] == b"RECORD_NOT_JSON"
    assert found[dh.REDRIVE_COUNT] == b"2" and found[dh.REDRIVE_SOURCE] == b"dl:0:3"
    assert found[dh.CONSUMER_GROUP] == b"g-1"
    assert found[dh.FAILED_AT] == later.isoformat().encode()
    assert found[dh.SOURCE_TIMESTAMP] == NOW.isoformat().encode()
    assert found[dh.SOURCE_PARTITION] == b"1" and found[dh.SOURCE_OFFSET] == b"4"
    plan_record = deadletter.outgoing("dl", _plan(record), refused, LIMITS, group="g-1")
    assert plan_record.timestamp_ms == int(NOW.timestamp() * 1000)


def _plan(record: IngressRecord) -> Plan:
    return Plan(record, AuditRecord.model_construct(), "k")
