"""The projector against real Kafka and a real database (SQLite and PostgreSQL):
generated records in, tables out; crashes, poison records and rebalances change
nothing in the result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.exc import DBAPIError, StatementError

from flowledger.settings import Settings
from projections import db, lag, migrate, statements
from projections import tables as t
from projections.projector import Projector, topic_kinds
from projections.queries import iso
from projections.synthetic import Generated, stream
from tests.bulk_rows import write_both
from tests.stack_fixture import StackHandle
from tests.waiting import wait_for
from topics import clients
from topics.catalogue import RUNTIME

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, stack: StackHandle, settings: Settings) -> str:
    if request.param == "postgres":
        return stack.postgres_url()
    return settings.database_url()


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for eng in made:
        eng.dispose()


def open_engine(engines: list[Engine], url: str) -> Engine:
    eng = db.engine(url)
    migrate.upgrade(eng)
    engines.append(eng)
    return eng


def produce(settings: Settings, records: Sequence[Generated | tuple[str, bytes, bytes]]) -> None:
    producer = clients.producer(settings)
    for item in records:
        base, key, value = (
            (item.base, item.key, item.value) if isinstance(item, Generated) else item
        )
        producer.produce(settings.topic(base), key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


def dump(engine: Engine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with db.read_connection(engine) as conn:
        for name, table in t.TABLES.items():
            if name in ("projection_checkpoints", "projection_errors"):
                continue
            rows = conn.execute(select(table).order_by(*table.primary_key.columns))
            out[name] = [
                {k: iso(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}
                for row in rows
            ]
    return out


def count(engine: Engine, table: str) -> int:
    with db.read_connection(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(t.TABLES[table])).scalar_one())


def reference(settings: Settings, tmp_path: Path, engines: list[Engine]) -> dict[str, Any]:
    """What one clean projector (its own group, its own database) makes of the log."""
    url = f"sqlite:///{tmp_path / f'reference-{uuid.uuid4().hex[:6]}.db'}"
    eng = open_engine(engines, url)
    stats = Projector(
        settings, engine=eng, group_id=f"reference-{uuid.uuid4().hex[:8]}", batch_size=1000
    ).run_until_idle(120)
    assert stats.caught_up
    return dump(eng)


def test_projector_builds_the_tables_and_records_poison(
    settings: Settings, database_url: str, tmp_path: Path, engines: list[Engine]
) -> None:
    records = list(stream(runs=40, seed=5, audits=12, definitions=3))
    half = len(records) // 2
    poison = [
        (RUNTIME, b"run-000001", b"{not json"),
        (RUNTIME, b"run-000002", b'{"type": "RunExploded", "run_id": "run-000002"}'),
    ]
    produce(settings, [*records[:half], *poison, *records[half:]])
    eng = open_engine(engines, database_url)
    stats = Projector(settings, engine=eng).run_until_idle(120)
    assert stats.caught_up, stats
    assert stats.errors == 2
    assert count(eng, "workflow_runs") == 40
    assert count(eng, "workflow_runtime_events") == 12
    assert count(eng, "workflow_definitions") == 3
    with eng.connect() as conn:
        errors = list(conn.execute(select(t.projection_errors)))
    assert sorted(e.code for e in errors) == ["RECORD_INVALID", "RECORD_NOT_JSON"]
    assert all(e.topic == settings.topic(RUNTIME) and e.offset >= 0 for e in errors)
    assert lag.wait_caught_up(settings, eng, timeout=10)
    assert all(row["lag"] == 0 for row in lag.lag(settings, eng))
    assert dump(eng) == reference(settings, tmp_path, engines)


def _flowledger() -> str:
    found = shutil.which("flowledger", path=str(Path(sys.executable).parent))
    assert found is not None, "the flowledger console script is not installed"
    return found


def _checkpointed(eng: Engine) -> int:
    with db.read_connection(eng) as conn:
        total = conn.execute(select(func.sum(t.projection_checkpoints.c.next_offset))).scalar()
    return int(total or 0)


def _env(settings: Settings, database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "FLOWLEDGER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "FLOWLEDGER_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "FLOWLEDGER_DATABASE__URL": database_url,
        "FLOWLEDGER_PROJECTOR__GROUP_ID": settings.projector.group_id,
        **extra,
    }


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    return proc.stderr.read().decode(errors="replace") if proc.stderr else ""


def test_killing_the_projector_loses_and_doubles_nothing(
    settings: Settings, database_url: str, tmp_path: Path, engines: list[Engine]
) -> None:
    # 50,000 records: ~48,000 runtime events of 2,900 runs, audits, definitions
    records = list(stream(runs=2900, seed=9, audits=1500, definitions=5))
    assert len(records) >= 50_000
    produce(settings, records)
    eng = open_engine(engines, database_url)
    env = _env(settings, database_url, FLOWLEDGER_PROJECTOR__BATCH_SIZE="500")
    total = len(records)
    kills = 0
    for kill in range(5):
        before = _checkpointed(eng)
        # A SIGKILLed member keeps its partitions until the session timeout; a fresh
        # group per restart avoids that wait, and shows that positions come from the
        # database checkpoints (a new group has no Kafka offsets at all).
        env["FLOWLEDGER_PROJECTOR__GROUP_ID"] = f"kill-{kill}-{uuid.uuid4().hex[:6]}"
        proc = subprocess.Popen(
            [_flowledger(), "projector"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            # a sixth of what is left, so that even the fifth instance dies mid-way
            target = before + max(1, (total - before) // 6)
            wait_for(
                lambda target=target, proc=proc: (  # type: ignore[misc]
                    _checkpointed(eng) >= target or proc.poll() is not None
                ),
                90,
                f"projector #{kill} to apply some batches",
            )
            assert proc.poll() is None, _stderr(proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        kills += 1
        assert _checkpointed(eng) < total, "the projector finished before it was killed"
    assert kills == 5
    stats = Projector(
        settings, engine=eng, group_id=f"final-{uuid.uuid4().hex[:6]}"
    ).run_until_idle(120)
    assert stats.caught_up
    assert count(eng, "workflow_runs") == 2900
    assert count(eng, "projection_errors") == 0
    assert dump(eng) == reference(settings, tmp_path, engines)


# The broker's default group.min.session.timeout.ms: the shortest it accepts.
SESSION_TIMEOUT_MS = 6000


def test_two_projectors_share_six_partitions_and_survive_one_killed(
    settings: Settings, database_url: str, tmp_path: Path, engines: list[Engine]
) -> None:
    assert settings.kafka.partitions == 6
    records = list(stream(runs=2000, seed=13, audits=600, definitions=4))
    # Half now, half once both members hold partitions, so the kill lands mid-run
    # however fast the first member is.
    half = len(records) // 2
    produce(settings, records[:half])
    eng = open_engine(engines, database_url)
    total = len(records)
    # The instance that dies: a real process in the group, killed without warning.
    doomed = subprocess.Popen(
        [
            _flowledger(),
            "projector",
            "--batch-size",
            "100",
            "--session-timeout-ms",
            str(SESSION_TIMEOUT_MS),
        ],
        env=_env(settings, database_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop = threading.Event()
    survivor = Projector(
        settings,
        engine=eng,
        batch_size=100,
        consumer_config={"session.timeout.ms": SESSION_TIMEOUT_MS},
    )
    failures: list[BaseException] = []

    def run() -> None:
        try:
            survivor.run(stop)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    try:
        wait_for(
            lambda: _checkpointed(eng) > 0 or doomed.poll() is not None,
            60,
            "the first projector to start applying",
        )
        assert doomed.poll() is None, _stderr(doomed)
        thread.start()
        wait_for(
            lambda: bool(survivor.owned) or bool(failures),
            60,
            "the second projector to get partitions",
        )
        produce(settings, records[half:])
        assert _checkpointed(eng) < total, "the first projector finished before the kill"
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
    try:
        # The survivor gets the dead member's partitions after its session timeout
        # and resumes them from the database checkpoints.
        assert lag.wait_caught_up(settings, eng, timeout=120)
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures
    assert count(eng, "workflow_runs") == 2000
    assert count(eng, "projection_errors") == 0
    assert dump(eng) == reference(settings, tmp_path, engines)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_flowledger(), *args],
        env=_env(settings, settings.database_url()),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_projections_status_and_wait_until_caught_up(
    settings: Settings, engines: list[Engine]
) -> None:
    records = list(stream(runs=60, seed=21, audits=10, definitions=2))
    produce(settings, records)
    eng = open_engine(engines, settings.database_url())

    behind = _cli(
        settings, "projections", "wait", "--until-caught-up", "--timeout", "0.5", "--json"
    )
    assert behind.returncode == 1, behind.stderr
    assert json.loads(behind.stdout)["error"]["code"] == "PROJECTION_WAIT_TIMEOUT"
    status = _cli(settings, "projections", "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert {r["topic"] for r in rows} == set(topic_kinds(settings))
    assert sum(r["lag"] for r in rows) == len(records)
    assert all(r["lag"] == r["end_offset"] - r["next_offset"] for r in rows)

    stop = threading.Event()
    projector = Projector(settings, engine=eng)
    thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        waited = _cli(
            settings, "projections", "wait", "--until-caught-up", "--timeout", "60", "--json"
        )
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout)["caught_up"] is True
        # read-your-writes: everything produced before the wait is in the tables
        assert count(eng, "workflow_runs") == 60
        assert count(eng, "workflow_runtime_events") == 10
    finally:
        stop.set()
        thread.join(60)
    status = _cli(settings, "projections", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert all(r["lag"] == 0 for r in json.loads(status.stdout))


def test_bulk_statements_store_on_postgres_what_sqlalchemy_stores(
    stack: StackHandle, engines: list[Engine]
) -> None:
    reference = open_engine(engines, stack.postgres_url())
    bulk = open_engine(engines, stack.postgres_url())
    columns, full = write_both(reference, bulk)

    def stored(eng: Engine) -> list[str]:
        # the row as PostgreSQL prints it: JSON text exactly as stored
        with eng.connect() as conn:
            return [
                r[0]
                for r in conn.exec_driver_sql("SELECT r::text FROM workflow_runs r ORDER BY run_id")
            ]

    assert stored(bulk) == stored(reference)
    # A value the database refuses is refused with the same message either way.
    for bad in ({"run_id": "x" * 300}, {"run_id": "e", "tenant": "a\u0000b"}):
        row = [{**full[0], **bad}]
        plain = _refusal(bulk, lambda conn, rows=row: conn.execute(insert(t.workflow_runs), rows))
        mine = _refusal(
            bulk,
            lambda conn, rows=row: statements.write_rows(
                conn, "workflow_runs", frozenset(columns), rows
            ),
        )
        assert mine == plain


def _refusal(eng: Engine, write: Callable[[Connection], object]) -> tuple[type, str]:
    with pytest.raises(StatementError) as refused, eng.begin() as conn:
        write(conn)
    orig = refused.value.orig if isinstance(refused.value, DBAPIError) else refused.value
    return type(refused.value), str(orig).splitlines()[0]
