"""Run rows that are awkward to write (quotes, backslashes, NULs, non-BMP text,
offsets past 2**32, timestamps in other zones), written once through SQLAlchemy's own
insert and once through the projector's bulk statements, so a test can compare what
each stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, insert

from projections import statements
from projections import tables as t


def awkward_runs() -> list[dict[str, Any]]:
    base = {
        "tenant": "acme",
        "status": "RUNNING",
        "last_seq": 1,
        "continued_as_new_count": 0,
        "source_topic": "t",
        "source_partition": 0,
        "source_offset": 2**40,
        "source_event_id": None,
    }
    return [
        {**base, "run_id": "a", "input": {"q": 'say "hi"\\', "n": [1, 2.5, None, True]}},
        {**base, "run_id": "b", "input": "plain text", "output": None, "error": []},
        {**base, "run_id": "c", "input": {"unicode": "été ☃ 𝄞", "nul": "a\u0000b"}},
        {
            **base,
            "run_id": "d",
            "current_step_path": 'root.steps[0] "quoted", {braced}',
            "started_at": datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
            "updated_at": datetime(2026, 11, 25, 10, 0, 1, 5, tzinfo=UTC),
            "completed_at": datetime(2026, 11, 25, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        },
    ]


def write_both(reference: Engine, bulk: Engine) -> tuple[list[str], list[dict[str, Any]]]:
    """Write the awkward runs into `reference` with SQLAlchemy's insert and into `bulk`
    with the bulk statements; returns the columns and the rows as written."""
    rows = awkward_runs()
    columns = sorted(set().union(*rows))
    full = [{c: r.get(c) for c in columns} for r in rows]
    with reference.begin() as conn:
        conn.execute(insert(t.workflow_runs), full)
    with bulk.begin() as conn:
        statements.write_rows(conn, "workflow_runs", frozenset(columns), full)
    return columns, full
