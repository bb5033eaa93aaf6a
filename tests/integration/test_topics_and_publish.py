"""Topics and publishing against real Kafka: ensure is idempotent, and NDJSON with a
bad line in the middle publishes the good lines and reports the bad one."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from typer.testing import CliRunner

from flowledger.cli import _register, app
from flowledger.settings import Settings
from topics import admin, clients
from topics.catalogue import EVENTS, catalogue
from topics.serde import decode_envelope

_register()


def invoke(settings: Settings, *args: str, input: str | None = None) -> Any:
    runner = CliRunner()
    return runner.invoke(
        app, list(args), input=input, obj={"settings": settings}, catch_exceptions=False
    )


def read_back(settings: Settings, topic: str, count: int, timeout: float = 30) -> list[Any]:
    consumer = clients.consumer(settings, f"reader-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
    finally:
        consumer.close()
    return out


def test_ensure_twice_is_idempotent(settings: Settings) -> None:
    first = invoke(settings, "topics", "ensure", "--json")
    second = invoke(settings, "topics", "ensure", "--json")
    assert first.exit_code == 0 and second.exit_code == 0
    assert {t["status"] for t in json.loads(second.stdout)} == {"exists"}
    names = {t["name"] for t in json.loads(second.stdout)}
    assert names == {s.name for s in catalogue(settings)}
    described = invoke(settings, "topics", "describe", "--json")
    events = next(t for t in json.loads(described.stdout) if t["name"].endswith(EVENTS))
    assert events["partitions"] == settings.kafka.events_partitions


def test_ensure_reports_drift(settings: Settings) -> None:
    wider = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"events_partitions": 3})}
    )
    reports = {r.name: r for r in admin.ensure(wider)}
    drifted = reports[wider.topic(EVENTS)]
    assert drifted.status == "differs"
    assert "partitions: expected 3, found 6" in drifted.differences


def good(n: int) -> str:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "order.placed",
            "tenant": "acme",
            "occurred_at": "2026-01-02T03:04:05+01:00",
            "payload": {"n": n},
        }
    )


def test_publish_ndjson_with_a_bad_line(settings: Settings) -> None:
    lines = [good(1), good(2), '{"event_type": "x"}', good(4)]
    result = invoke(settings, "publish", "-", "--json", input="\n".join(lines) + "\n")
    assert result.exit_code == 2
    outcome = json.loads(result.stdout)
    assert [o["line"] for o in outcome] == [1, 2, 3, 4]
    assert "error" in outcome[2]
    assert outcome[2]["error"]["code"] == "RECORD_INVALID"
    assert all("offset" in o for i, o in enumerate(outcome) if i != 2)

    messages = read_back(settings, settings.topic(EVENTS), 3)
    got = sorted(decode_envelope(m.value()).payload["n"] for m in messages)
    assert got == [1, 2, 4]
    keys = {m.key().decode() for m in messages}
    assert all(k.startswith("acme:") for k in keys)


def test_publish_all_good_exits_zero(settings: Settings) -> None:
    result = invoke(settings, "publish", "-", "--json", input=good(7))
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)[0]["line"] == 1
