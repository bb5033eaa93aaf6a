"""Operators' tools against the real stack (issue 17): dead letters keep the original's
headers and timestamp, are found by reason, shown whole, fixed and redriven once (and
audited); a dry run changes nothing; the loop guard stops a record that keeps failing;
a redrive killed half-way and started again sends each record once; projection errors
show in `projections errors`, `projections status` and replay verify's verdict; and
`topics read` reads by partition, offset and time without leaving a group behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from flowledger import tracing
from flowledger.cli import _register, app, output
from flowledger.settings import DeadLetterSettings, Settings
from processors import deadletter_headers as dh
from processors.app import Processor
from processors.stats import Stats as ProcessorStats
from projections import db
from projections import tables as t
from projections.projector import Projector
from tests.integration.runtime_support import REPO, component_env
from tests.waiting import wait_for
from topics import admin, clients, reader
from topics.catalogue import AUDIT, DEADLETTER, EVENTS, OPERATORS, RUNTIME, catalogue

_register()
FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")


def cli(settings: Settings, *args: str) -> Any:
    result = CliRunner().invoke(app, list(args), obj={"settings": settings}, catch_exceptions=False)
    return result


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of a CLI table printed wide enough not to fold, by column header."""
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    names = [cell.strip() for cell in header.strip("┃").split("┃")]
    return [
        dict(zip(names, [cell.strip() for cell in line.strip("│").split("│")], strict=True))
        for line in lines
        if line.startswith("│")
    ]


def cli_json(settings: Settings, *args: str, code: int = 0) -> Any:
    result = cli(settings, *args, "--json")
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def envelope(tenant: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "order.placed",
        "tenant": tenant,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {"n": 1},
        **extra,
    }


def produce(
    settings: Settings,
    values: list[bytes | None],
    *,
    headers: list[tuple[str, bytes]] | None = None,
    timestamp_ms: int = 0,
    topic: str = EVENTS,
) -> None:
    producer = clients.producer(settings)
    for value in values:
        producer.produce(
            settings.topic(topic),
            key=b"same",
            value=value,
            headers=headers,
            timestamp=timestamp_ms,
        )
    assert producer.flush(30) == 0


def process_until_idle(settings: Settings) -> ProcessorStats:
    import asyncio

    stats = asyncio.run(Processor(settings, threading.Event()).run(until_idle=True, timeout=120))
    assert stats.caught_up, stats
    return stats


def project_until_idle(settings: Settings) -> None:
    stats = Projector(settings).run_until_idle(120)
    assert stats.caught_up


def topic_ends(settings: Settings) -> dict[tuple[str, int], int]:
    client = clients.admin(settings)
    slots = [(s.name, p) for s in catalogue(settings) for p in range(s.partitions)]
    return admin.end_offsets(client, slots, settings.kafka.request_timeout_s)


def table_counts(settings: Settings) -> dict[str, int]:
    eng = db.engine(settings.database_url())
    try:
        with eng.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in t.TABLES.items()
            }
    finally:
        eng.dispose()


def audits_of(settings: Settings, event_id: str) -> list[dict[str, Any]]:
    found = [json.loads(r.value) for r in reader.read_all(settings, settings.topic(AUDIT))]
    return [a for a in found if a.get("event_id") == event_id]


def test_dead_letters_keep_everything_and_a_fixed_copy_is_redriven_once(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    traceparent = tracing.new_traceparent()
    origin = [(tracing.TRACEPARENT, traceparent.encode()), ("x-origin", b"shop-7")]
    an_hour_ago = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    invalid = envelope(tenant, colour="red")
    produce(
        settings,
        [b'{"event_type": "order.placed", "tenant": ', json.dumps(invalid).encode(), None],
        headers=origin,
        timestamp_ms=an_hour_ago,
    )
    process_until_idle(settings)

    # In ingress order: partitioned routing refuses them on different routing partitions.
    letters = sorted(
        reader.read_all(settings, settings.topic(DEADLETTER)),
        key=lambda r: int(r.headers[dh.SOURCE_OFFSET]),
    )
    assert [r.headers[dh.REASON] for r in letters] == [
        "RECORD_NOT_JSON",
        "RECORD_INVALID",
        "RECORD_EMPTY",
    ]
    for offset, letter in enumerate(letters):
        assert letter.timestamp_ms == an_hour_ago, "the original's timestamp is kept"
        assert letter.headers[tracing.TRACEPARENT] == traceparent
        assert letter.headers["x-origin"] == "shop-7"
        assert letter.headers[dh.CONSUMER_GROUP] == settings.processor.group_id
        assert datetime.fromisoformat(letter.headers[dh.FAILED_AT]) > datetime.now(UTC) - timedelta(
            minutes=10
        )
        assert letter.headers[dh.SOURCE_TOPIC] == settings.topic(EVENTS)
        assert letter.headers[dh.SOURCE_OFFSET] == str(offset)
        # Every added header is a UTF-8 string.
        assert all(
            raw is not None and raw.decode("utf-8")
            for name, raw in letter.raw_headers
            if name.startswith("flowledger.")
        )
    empty = next(r for r in letters if r.headers[dh.REASON] == "RECORD_EMPTY")
    assert empty.raw_value is None, "a null value stays null"

    listed = cli_json(settings, "deadletters", "list", "--reason", "RECORD_INVALID")
    assert len(listed) == 1
    item = listed[0]
    for key in (
        "partition",
        "offset",
        "reason",
        "error",
        "source_topic",
        "source_partition",
        "source_offset",
        "redrive_count",
    ):
        assert key in item
    assert item["reason"] == "RECORD_INVALID" and item["redrive_count"] == 0
    assert item["source_offset"] == 1 and item["tenant"] == tenant
    assert [i["reason"] for i in cli_json(settings, "deadletters", "list", "--tenant", tenant)] == [
        "RECORD_INVALID"
    ]
    assert len(cli_json(settings, "deadletters", "list", "--reason", "RECORD_NOT_JSON")) == 1
    assert len(cli_json(settings, "deadletters", "list", "--since", "1m", "--limit", "2")) == 2
    assert cli_json(settings, "deadletters", "list", "--until", "2h") == []
    at = f"{item['partition']}:{item['offset']}"
    shown = cli_json(settings, "deadletters", "show", at)
    assert shown["headers"]["x-origin"] == "shop-7" and shown["reason"] == "RECORD_INVALID"
    assert shown["source_topic"] == settings.topic(EVENTS) and shown["source_offset"] == 1
    assert json.loads(shown["value"])["colour"] == "red"
    missing = cli_json(settings, "deadletters", "show", "0:99", code=2)
    assert missing["error"]["code"] == "DEADLETTER_NOT_FOUND"

    # A dry run prints what would go and changes nothing: no topic moves, no table.
    project_until_idle(settings)
    ends, counts = topic_ends(settings), table_counts(settings)
    fixed = {k: v for k, v in invalid.items() if k != "colour"}
    fixed_file = tmp_path / "FIXED.ndjson"
    fixed_file.write_text(json.dumps({**item, "value": fixed}) + "\n", encoding="utf-8")
    dry = cli_json(
        settings, "deadletters", "redrive", "--offsets", at, "--from-file", str(fixed_file)
    )
    assert dry["execute"] is False and dry["sent"] == 0 and dry["would_send"] == 1
    (would,) = dry["records"]
    assert would["action"] == "send" and would["corrected"] is True
    assert json.loads(would["value"]) == fixed
    assert would["headers"][dh.REDRIVE_COUNT] == "1"
    assert would["headers"][dh.REDRIVE_SOURCE] == f"{settings.topic(DEADLETTER)}:{at}"
    assert would["headers"][tracing.TRACEPARENT] == traceparent
    project_until_idle(settings)
    assert topic_ends(settings) == ends
    assert table_counts(settings) == counts

    done = cli_json(
        settings,
        "deadletters",
        "redrive",
        "--offsets",
        at,
        "--from-file",
        str(fixed_file),
        "--execute",
        "--by",
        "alice",
    )
    assert done["sent"] == 1 and done["records"][0]["sent_to"] is not None
    again = cli_json(
        settings,
        "deadletters",
        "redrive",
        "--offsets",
        at,
        "--from-file",
        str(fixed_file),
        "--execute",
    )
    assert again["sent"] == 0 and again["skipped"] == {"already_redriven": 1}
    process_until_idle(settings)
    # Processed: audited without a refusal (no key to route by is no refusal).
    processed = [
        a
        for a in audits_of(settings, invalid["event_id"])
        if a["error_code"] in (None, "CORRELATION_MISSING")
    ]
    assert len(processed) == 1, "the corrected copy is processed once"
    redriven = reader.read(
        settings,
        settings.topic(EVENTS),
        reader.ReadRange(
            partition=done["records"][0]["sent_to"]["partition"],
            offset=done["records"][0]["sent_to"]["offset"],
            max=1,
        ),
    )[0]
    assert redriven.headers[tracing.TRACEPARENT] == traceparent
    assert redriven.headers[dh.REDRIVE_COUNT] == "1"

    actions = [json.loads(r.value) for r in reader.read_all(settings, settings.topic(OPERATORS))]
    assert [(a["action"], a["requested_by"], a["outcome"]) for a in actions] == [
        ("redrive", "alice", "accepted")
    ], "the one redrive that changed something is audited; the dry run and the no-op are not"
    assert actions[0]["details"]["sent_offsets"] == [at]
    assert (
        cli_json(settings, "deadletters", "list", "--reason", "RECORD_INVALID")[0]["redriven"][
            "state"
        ]
        == "sent"
    )
    # The console took its width from the environment when first imported (80 under
    # pytest-xdist): widened here so that no cell folds.
    monkeypatch.setattr(output.console, "width", 400)
    wide = CliRunner().invoke(
        app,
        ["deadletters", "list", "--reason", "RECORD_INVALID"],
        obj={"settings": settings},
        catch_exceptions=False,
    )
    assert wide.exit_code == 0, wide.output
    (row,) = table_rows(wide.stdout)
    sent_to = done["records"][0]["sent_to"]
    assert row["redriven"] == f"{sent_to['partition']}:{sent_to['offset']}"
    assert datetime.fromisoformat(row["failed_at"]) == datetime.fromisoformat(item["failed_at"])


def test_a_redriven_copy_of_an_event_already_processed_is_not_processed_again(
    settings: Settings, tmp_path: Path
) -> None:
    # The event went through once; a broken copy of it (same event_id) was refused.
    event = envelope(f"acme-{uuid.uuid4().hex[:6]}")
    produce(settings, [json.dumps(event).encode(), json.dumps({**event, "colour": "red"}).encode()])
    process_until_idle(settings)
    (letter,) = cli_json(settings, "deadletters", "list", "--reason", "RECORD_INVALID")
    fixed_file = tmp_path / "FIXED.ndjson"
    fixed_file.write_text(json.dumps({**letter, "value": event}) + "\n", encoding="utf-8")

    done = cli_json(
        settings,
        "deadletters",
        "redrive",
        "--offsets",
        f"{letter['partition']}:{letter['offset']}",
        "--from-file",
        str(fixed_file),
        "--execute",
    )
    assert done["sent"] == 1
    stats = process_until_idle(settings)
    assert stats.duplicates == 1, stats
    processed = [
        a
        for a in audits_of(settings, event["event_id"])
        if a["error_code"] in (None, "CORRELATION_MISSING")
    ]
    assert len(processed) == 1, "the redriven copy is a duplicate, not a second event"


def test_the_loop_guard_stops_a_record_after_n_redrives(settings: Settings) -> None:
    guarded = settings.model_copy(update={"deadletters": DeadLetterSettings(max_redrives=2)})
    produce(guarded, [b"still not json"])
    process_until_idle(guarded)
    for _ in range(2):
        sent = cli_json(
            guarded, "deadletters", "redrive", "--reason", "RECORD_NOT_JSON", "--execute"
        )
        assert sent["sent"] == 1
        process_until_idle(guarded)
    letters = cli_json(guarded, "deadletters", "list")
    assert [d["redrive_count"] for d in letters] == [0, 1, 2], "dead-lettered again, count raised"
    stopped = cli_json(
        guarded, "deadletters", "redrive", "--reason", "RECORD_NOT_JSON", "--execute"
    )
    assert stopped["sent"] == 0
    assert stopped["skipped"] == {"already_redriven": 2, "loop_guard": 1}
    guard = next(r for r in stopped["records"] if r["skipped"] == "loop_guard")
    assert (guard["partition"], guard["offset"]) == (letters[2]["partition"], letters[2]["offset"])


def test_a_redrive_killed_half_way_and_started_again_sends_each_record_once(
    settings: Settings, tmp_path: Path
) -> None:
    total = 40
    produce(settings, [f"broken {i}".encode() for i in range(total)])
    process_until_idle(settings)
    assert len(cli_json(settings, "deadletters", "list")) == total
    before = sum(
        v for (topic, _p), v in topic_ends(settings).items() if topic == settings.topic(EVENTS)
    )
    env = {
        **component_env(settings),
        "FLOWLEDGER_DEADLETTERS__REDRIVE_BATCH": "1",
        "FLOWLEDGER_DEADLETTERS__REDRIVE_RATE_PER_S": "8",
    }
    log = tmp_path / "redrive.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [FLOWLEDGER, "deadletters", "redrive", "--all", "--execute", "--json"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def redriven() -> int:
        ends = topic_ends(settings)
        return sum(v for (topic, _p), v in ends.items() if topic == settings.topic(EVENTS)) - before

    try:
        wait_for(lambda: redriven() >= 5, 90, "a few records redriven", lambda: log.read_text())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    first = redriven()
    assert first < total, "the redrive was killed half-way"

    resumed = cli_json(settings, "deadletters", "redrive", "--all", "--execute")
    assert resumed["sent"] + resumed["skipped"].get("already_redriven", 0) == total
    assert resumed["sent"] == total - first, "what landed before the kill is not sent again"
    sources = Counter(
        r.headers.get(dh.REDRIVE_SOURCE)
        for r in reader.read_all(settings, settings.topic(EVENTS))
        if dh.REDRIVE_SOURCE in r.headers
    )
    assert len(sources) == total and set(sources.values()) == {1}, "each record sent once"
    assert cli_json(settings, "deadletters", "redrive", "--all", "--execute")["sent"] == 0


def test_projection_errors_show_in_errors_status_and_verify(settings: Settings) -> None:
    produce(settings, [b"not a runtime event"], topic=RUNTIME)
    project_until_idle(settings)
    errors = cli_json(settings, "projections", "errors")
    assert len(errors) == 1
    error = errors[0]
    assert {"topic", "partition", "offset", "code", "message", "when"} <= set(error)
    assert error["topic"] == settings.topic(RUNTIME) and error["offset"] == 0
    status = cli_json(settings, "projections", "status")
    assert sum(r["errors"] for r in status) == 1
    human = cli(settings, "projections", "status")
    assert "1 record(s) refused" in human.stdout

    verified = cli_json(settings, "replay", "verify", "--shadow")
    assert verified["identical"] is True
    assert verified["verdict"] == "identical; 1 record refused on both sides"
    assert verified["refused"] == {"live": 1, "rebuilt": 1}

    # The live side refused a record the rebuild does not: that is a difference.
    eng = db.engine(settings.database_url())
    try:
        with eng.begin() as conn:
            conn.execute(
                insert(t.projection_errors).values(
                    projection="default",
                    topic=settings.topic(RUNTIME),
                    partition=0,
                    offset=999,
                    code="PROJECTION_RECORD_INVALID",
                    reason="planted",
                    recorded_at=datetime.now(UTC),
                )
            )
    finally:
        eng.dispose()
    differs = cli_json(settings, "replay", "verify", "--shadow", code=1)
    assert differs["identical"] is False
    assert differs["refused"] == {"live": 2, "rebuilt": 1}
    assert {
        "table": "projection_errors",
        "key": {"records": "refused"},
        "column": "count",
        "live": 2,
        "rebuilt": 1,
    } in differs["differences"]


def test_topics_read_by_partition_offset_time_and_headers(settings: Settings) -> None:
    base = int((datetime.now(UTC) - timedelta(hours=3)).timestamp() * 1000)
    producer = clients.producer(settings)
    for i in range(6):
        producer.produce(
            settings.topic(EVENTS),
            key=b"k",
            value=json.dumps({"i": i}).encode(),
            partition=1,
            headers=[("x-i", str(i).encode())],
            # one record every 20 minutes, the last one an hour and twenty minutes ago
            timestamp=base + i * 20 * 60 * 1000,
        )
    producer.produce(settings.topic(EVENTS), key=b"k", value=b"{}", partition=0)
    assert producer.flush(30) == 0
    group_client = clients.admin(settings)

    def groups() -> set[str]:
        listed = group_client.list_consumer_groups(request_timeout=10).result()
        return {g.group_id for g in listed.valid}

    groups_before = groups()

    def read(*args: str) -> list[dict[str, Any]]:
        return cli_json(settings, "topics", "read", "events", *args)  # type: ignore[no-any-return]

    assert [
        json.loads(r["value"])["i"] for r in read("--partition", "1", "--offset", "2", "--max", "2")
    ] == [2, 3]
    assert {r["partition"] for r in read("--partition", "1")} == {1}
    assert len(read()) == 7
    at = datetime.fromtimestamp((base + 40 * 60 * 1000) / 1000, tz=UTC).isoformat()
    until = datetime.fromtimestamp((base + 60 * 60 * 1000) / 1000, tz=UTC).isoformat()
    timed = read("--partition", "1", "--from-time", at, "--to-time", until)
    assert [json.loads(r["value"])["i"] for r in timed] == [2, 3]
    assert [r["headers"]["x-i"] for r in read("--partition", "1", "--max", "1")] == ["0"]
    human = cli(settings, "topics", "read", "events", "--partition", "1", "--headers", "--max", "1")
    assert human.exit_code == 0 and "x-i=0" in human.stdout
    assert cli_json(settings, "topics", "read", "events", "--partition", "9", code=2)["error"]
    # Reading by assignment joins no group and commits nothing: none is left behind.
    assert not {g for g in groups() - groups_before if g.startswith("flowledger-reader-")}
