"""The projection's positions in the log: per (topic, partition), the next offset to
apply, written in the same transaction as the rows it covers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Dialect, select, tuple_

from projections import statements
from projections import tables as t
from projections.records import Slot
from projections.statements import Statement, insert_ignore

DEFAULT_PROJECTION = "core"
_COLUMNS = frozenset({"projection", "topic", "partition", "next_offset", "updated_at"})


def read_checkpoints(conn: Connection, projection: str = DEFAULT_PROJECTION) -> dict[Slot, int]:
    cp = t.projection_checkpoints
    query = select(cp.c.topic, cp.c.partition, cp.c.next_offset).where(
        cp.c.projection == projection
    )
    return {(topic, p): offset for topic, p, offset in conn.execute(query)}


def lock_checkpoints(
    conn: Connection, projection: str, partitions: Sequence[Slot]
) -> dict[Slot, int]:
    """The stored checkpoints of ``partitions``, locked for the caller's transaction."""
    cp = t.projection_checkpoints
    dialect = conn.dialect.name
    # Creating the missing rows first means the SELECT below always has rows to lock:
    # two instances that both think they own a partition queue up here instead of
    # both applying it.
    conn.execute(
        insert_ignore(dialect, cp),
        [
            {"projection": projection, "topic": topic, "partition": p, "next_offset": 0}
            for topic, p in partitions
        ],
    )
    query = select(cp.c.topic, cp.c.partition, cp.c.next_offset).where(
        cp.c.projection == projection,
        tuple_(cp.c.topic, cp.c.partition).in_(list(partitions)),
    )
    if dialect == "postgresql":
        query = query.with_for_update()
    return {(topic, p): offset for topic, p, offset in conn.execute(query)}


def advance(
    dialect: Dialect, projection: str, ends: Mapping[Slot, int], starts: Mapping[Slot, int]
) -> Statement | None:
    """The checkpoint upsert of the partitions a batch moves forward."""
    now = datetime.now(UTC)
    rows = [
        {
            "projection": projection,
            "topic": topic,
            "partition": p,
            "next_offset": end,
            "updated_at": now,
        }
        for (topic, p), end in ends.items()
        if end > starts.get((topic, p), 0)
    ]
    return statements.upsert_rows(dialect, "projection_checkpoints", _COLUMNS, rows)
