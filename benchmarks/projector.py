"""Projector throughput: produce N generated runtime events (a mix over N/20 runs, i.e.
10,000 runs for the default 200,000 events, with steps, actions, waits, human tasks and
logs, interleaved across runs), then measure in the same run a bare confluent-kafka
consume of them (the baseline), the projector into SQLite and the projector into
PostgreSQL. The last line of output is one JSON object.

    .venv/bin/python benchmarks/projector.py [--events 200000] [--batch-size 10000] [--json]
        [--kafka BOOTSTRAP] [--postgres-url URL | --no-postgres]

Without --kafka it starts a private local stack (the launcher of `stack up`); without
--postgres-url a private PostgreSQL cluster. Rates count from the first record read to
the last one applied, so the consumer group join (a few seconds) is left out of all
three figures alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Run as a script, Python puts benchmarks/ on the path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._runtime_events import EVENTS_PER_RUN, produce
from benchmarks._stack import local_stack
from flowledger.cli.foreground import tune_gc
from flowledger.settings import Settings
from flowledger.stack import database
from projections import db, migrate
from projections.projector import Projector
from topics import admin, clients
from topics.catalogue import RUNTIME


def raw_consume(settings: Settings, expected: int, batch: int) -> float:
    consumer = clients.consumer(settings, f"bench-raw-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([settings.topic(RUNTIME)])
    seen = 0
    started: float | None = None
    deadline = time.monotonic() + 300
    while seen < expected and time.monotonic() < deadline:
        messages = consumer.consume(num_messages=batch, timeout=1.0)
        if messages and started is None:
            started = time.monotonic()
        # Touch what the projector reads of every record, so the baseline is a consume
        # that actually looks at the records.
        for m in messages:
            if m.error() is None:
                m.value()
                seen += 1
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return seen / elapsed if elapsed > 0 else float("inf")


def project(settings: Settings, url: str, batch: int) -> dict[str, Any]:
    eng = db.engine(url)
    try:
        migrate.upgrade(eng)
        projector = Projector(
            settings, engine=eng, batch_size=batch, group_id=f"bench-{uuid.uuid4().hex[:8]}"
        )
        stats = projector.run_until_idle(timeout=900)
    finally:
        eng.dispose()
    out = stats.as_dict()
    out["per_s"] = stats.records / stats.busy_seconds if stats.busy_seconds else None
    return out


@contextlib.contextmanager
def kafka_settings(bootstrap: str | None) -> Iterator[Settings]:
    if bootstrap is None:
        with local_stack() as settings:
            yield settings
        return
    base = Settings()
    kafka = base.kafka.model_copy(
        update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}.", "bootstrap_servers": bootstrap}
    )
    settings = base.model_copy(update={"kafka": kafka})
    admin.ensure(settings)
    yield settings


@contextlib.contextmanager
def postgres_url(settings: Settings, given: str | None, tmp: Path) -> Iterator[str]:
    if given is not None:
        yield given
        return
    service = database.start_postgres(
        settings.stack.model_copy(update={"postgres_port": 0}), tmp / "pg"
    )
    try:
        yield service.endpoint
    finally:
        database.stop_postgres(service)


def measure(
    settings: Settings,
    events: int,
    batch: int,
    tmp: Path,
    postgres: str | bool | None = True,
    say: Callable[[str], None] = lambda _text: None,
) -> dict[str, Any]:
    """Produce, then the raw consume, the projector into SQLite and (unless
    ``postgres`` is False) into PostgreSQL: ``postgres`` is a URL to attach to, or
    True for a private cluster under ``tmp``."""
    # The same collector settings as `flowledger projector`.
    tune_gc()
    produced = produce(settings, events)
    say(f"produced {produced} runtime events to {settings.topic(RUNTIME)}")
    raw = raw_consume(settings, produced, batch)
    say(f"raw consume: {raw:,.0f}/s")
    sqlite_stats = project(settings, f"sqlite:///{tmp / 'bench.db'}", batch)
    sqlite_rate = sqlite_stats["per_s"]
    say(f"sqlite: {sqlite_rate:,.0f}/s {sqlite_stats}")
    pg_rate: float | None = None
    if postgres is not False:
        given = postgres if isinstance(postgres, str) else None
        with postgres_url(settings, given, tmp) as url:
            pg_stats = project(settings, url, batch)
        pg_rate = pg_stats["per_s"]
        say(f"postgres: {pg_rate:,.0f}/s {pg_stats}")
    return {
        "events": produced,
        "runs": max(1, events // EVENTS_PER_RUN),
        "batch_size": batch,
        "raw_consume_per_s": round(raw),
        "sqlite_per_s": round(sqlite_rate),
        "postgres_per_s": round(pg_rate) if pg_rate is not None else None,
        "sqlite_ratio": round(sqlite_rate / raw, 4),
        "postgres_ratio": round(pg_rate / raw, 4) if pg_rate is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--kafka", default=None, help="attach to this bootstrap")
    parser.add_argument("--postgres-url", default=None, help="attach to this database")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    with (
        kafka_settings(args.kafka) as settings,
        tempfile.TemporaryDirectory(prefix="flowledger-bench-db-") as tmp_dir,
    ):
        tmp = Path(tmp_dir)
        # postgres needs to reach its data directory through the temporary one
        tmp.chmod(0o755)
        postgres = False if args.no_postgres else (args.postgres_url or True)
        figures = measure(settings, args.events, args.batch_size, tmp, postgres, say)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
