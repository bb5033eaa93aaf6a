"""Hostile records interleaved with valid events on one partition (issue 12): every bad
one is dead-lettered with its reason, every valid one is processed and audited once, the
processor never dies and the partition's lag drains to 0."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowledger.settings import Settings
from processors import audit as audit_records
from processors import deadletter
from processors.status import lag
from tests.integration.runtime_support import (
    definition,
    record,
    spawn_processor,
    stop_process,
    worker,
)
from tests.waiting import until
from topics import clients
from topics.catalogue import AUDIT, DEADLETTER, EVENTS, RUNTIME
from topics.reader import read_all
from workflows import control
from workflows.definitions import store
from workflows.messages import run_workflow_id


def body(event_type: str = "noise", key: str | None = None, **payload: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "tenant": "acme",
        "occurred_at": datetime.now(UTC).isoformat(),
        "workflow_correlation_key": key,
        "payload": payload,
    }


def sized(doc: dict[str, Any], size: int) -> bytes:
    """The document padded (in payload.pad) to exactly `size` bytes."""
    doc = {**doc, "payload": {**doc["payload"], "pad": ""}}
    base = len(json.dumps(doc).encode())
    doc["payload"]["pad"] = "x" * (size - base)
    out = json.dumps(doc).encode()
    assert len(out) == size
    return out


def deep(levels: int) -> bytes:
    doc = body()
    text = json.dumps(doc)
    nested = '{"a":' * levels + "1" + "}" * levels
    return text.replace('"payload": {}', f'"payload": {nested}').encode()


def waiting_definition() -> dict[str, Any]:
    return definition(
        [
            {
                "id": "w",
                "type": "event.wait",
                "event_type": "order.paid",
                "correlation_key": {"$expr": "payload.key"},
                "assign": {"vars.got": {"$expr": "event.event_id"}},
            },
            {"id": "ret", "type": "control.return", "output": {"$expr": "vars.got"}},
        ]
    )


def triggered_definition() -> dict[str, Any]:
    # `x + 1` fails on a string: the mapping of that event fails, not the processor.
    return definition(
        [{"id": "ret", "type": "control.return", "output": {"$expr": "payload.n"}}],
        trigger={
            "type": "event",
            "event_type": "mapped",
            "payload_mapping": {"n": {"$expr": "event.payload.x + 1"}},
        },
    )


def produce(settings: Settings, values: list[bytes | None]) -> None:
    producer = clients.producer(settings)
    for value in values:
        # One key: every record lands on one partition, in this order.
        producer.produce(settings.topic(EVENTS), key=b"same", value=value)
    assert producer.flush(30) == 0


def drained(settings: Settings, total: int) -> bool:
    # The stage whose offsets move only past done effects: the routing topic's when
    # routing is partitioned (the forwarder commits ingress once its copies are written).
    report = lag(settings)
    stage = report.get("routing", report)
    committed = sum(r["committed"] or 0 for r in stage["partitions"])
    return committed >= total and report["total_lag"] == 0


async def test_hostile_records_never_stop_the_processor(settings: Settings, tmp_path: Path) -> None:
    limit = settings.records.max_bytes
    waiting = waiting_definition()
    trigger = triggered_definition()
    store.publish(settings, trigger)
    first, last = body("order.paid", key="k-first"), body("order.paid", key="k-last")
    mapped_bad, mapped_good = body("mapped", x="a"), body("mapped", x=1)
    valid_under = body("big")
    nan = json.dumps(body(x=float("nan"))).encode()
    assert b"NaN" in nan
    cases: list[tuple[bytes | None, str | None, dict[str, Any] | None]] = [
        # (value, the dead-letter reason or None, the valid envelope or None)
        (json.dumps(first).encode(), None, first),
        (deep(10_000), "RECORD_TOO_DEEP", None),
        (sized(valid_under, limit - 1), None, valid_under),
        (sized(body() | {"colour": "red"}, limit - 1), "RECORD_INVALID", None),
        (sized(body("big"), limit + 1), "RECORD_TOO_LARGE", None),
        (sized(body() | {"colour": "red"}, limit + 1), "RECORD_TOO_LARGE", None),
        (b'{"payload": {"n": ' + b"7" * 5001 + b"}}", "RECORD_NUMBER_TOO_LARGE", None),
        (nan, "RECORD_NUMBER_NOT_FINITE", None),
        (None, "RECORD_EMPTY", None),
        (b"", "RECORD_EMPTY", None),
        (b'{"event_type": "\xff\xfe"}', "RECORD_NOT_UTF8", None),
        (json.dumps(mapped_bad).encode(), "TRIGGER_MAPPING_FAILED", mapped_bad),
        (json.dumps(mapped_good).encode(), None, mapped_good),
        (json.dumps(last).encode(), None, last),
    ]
    log = tmp_path / "processor.log"
    async with worker(settings) as client:
        runs = {}
        for key in ("k-first", "k-last"):
            started = await control.start(settings, client, record(waiting), {"key": key})
            runs[key] = started.run_id
        await until(lambda: _waits_created(settings, set(runs.values())), 60, "both waits")
        proc = spawn_processor(settings, log)
        try:
            produce(settings, [value for value, _reason, _env in cases])
            await until(lambda: drained(settings, len(cases)), 120, "the lag to drain")
            outputs = {
                key: await client.get_workflow_handle(run_workflow_id(run)).result()
                for key, run in runs.items()
            }
            assert proc.poll() is None, log.read_text()
            pid = proc.pid
        finally:
            stop_process(proc, 30)
    assert pid == proc.pid
    assert outputs["k-first"]["output"] == first["event_id"]
    assert outputs["k-last"]["output"] == last["event_id"]

    letters = read_all(settings, settings.topic(DEADLETTER))
    # In the order of their ingress offsets (partitioned routing re-keys them, so the
    # dead-letter topic's own order is per routing partition only).
    by_source = sorted(letters, key=lambda r: int(r.headers[deadletter.SOURCE_OFFSET]))
    reasons = [r.headers[deadletter.REASON] for r in by_source]
    assert reasons == [reason for _v, reason, _e in cases if reason is not None]
    by_reason = {r.headers[deadletter.REASON]: r for r in letters}
    too_deep = by_reason["RECORD_TOO_DEEP"]
    assert int(too_deep.headers[deadletter.SOURCE_OFFSET]) == 1
    oversized = [r for r in letters if r.headers.get(deadletter.VALUE) == "excerpt"]
    assert len(oversized) == 2
    assert all(json.loads(r.value)["bytes"] == limit + 1 for r in oversized)

    audits = [
        json.loads(r.value)
        for r in read_all(settings, settings.topic(AUDIT))
        if not audit_records.is_held(r.headers)
    ]
    assert len(audits) == len(cases), "every record is audited exactly once"
    per_event = Counter(a["event_id"] for a in audits if a["event_id"])
    for _value, _reason, env in cases:
        if env is not None:
            assert per_event[env["event_id"]] == 1
    big = next(a for a in audits if a["event_id"] == valid_under["event_id"])
    assert big["payload"] is None and big["payload_bytes"] > limit - 2000
    failed = next(a for a in audits if a["event_id"] == mapped_bad["event_id"])
    assert failed["error_code"] == "TRIGGER_MAPPING_FAILED"
    started = next(a for a in audits if a["event_id"] == mapped_good["event_id"])
    assert [d["outcome"] for d in started["deliveries"]] == ["started"]


def _waits_created(settings: Settings, run_ids: set[str]) -> bool:
    seen = {
        json.loads(r.value)["run_id"]
        for r in read_all(settings, settings.topic(RUNTIME))
        if json.loads(r.value)["type"] == "WaitCreated"
    }
    return run_ids <= seen
