"""Row-by-row comparison of two projection databases (the live one and a rebuild),
table by table, keyed by each table's primary key."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from projections import tables as t

# What a rebuild must reproduce: every projection table and the checkpoints. (The
# action ledger is in another metadata: it is no projection, so never compared.)
COMPARED = [table for table in t.metadata.sorted_tables]
MISSING = "<missing>"
# Bookkeeping written with the wall clock of the applying process, not from the log.
VOLATILE = {("projection_checkpoints", "updated_at"), ("projection_errors", "recorded_at")}


@dataclass(frozen=True)
class Difference:
    table: str
    key: dict[str, Any]
    column: str | None
    live: Any
    rebuilt: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": self.key,
            "column": self.column,
            "live": self.live,
            "rebuilt": self.rebuilt,
        }


def _normal(value: Any) -> Any:
    """One representation per value across drivers: aware UTC datetimes, JSON text
    parsed, floats that are whole numbers as ints."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return _normal(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _rows(engine: Engine, table: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
    keys = [c.name for c in table.primary_key.columns]
    with engine.connect() as conn:
        out = {}
        for row in conn.execute(select(table)).mappings():
            data = {k: _normal(v) for k, v in row.items()}
            out[tuple(data[k] for k in keys)] = data
    return out


def compare(live: Engine, rebuilt: Engine, limit: int = 1000) -> list[Difference]:
    found: list[Difference] = []
    for table in COMPARED:
        key_names = [c.name for c in table.primary_key.columns]
        left, right = _rows(live, table), _rows(rebuilt, table)
        for key in sorted(set(left) | set(right), key=repr):
            named = dict(zip(key_names, key, strict=True))
            a, b = left.get(key), right.get(key)
            if a is None or b is None:
                found.append(
                    Difference(
                        table.name,
                        named,
                        None,
                        MISSING if a is None else "present",
                        MISSING if b is None else "present",
                    )
                )
                continue
            for column in a:
                if (table.name, column) in VOLATILE:
                    continue
                if a[column] != b.get(column):
                    found.append(Difference(table.name, named, column, a[column], b.get(column)))
            if len(found) >= limit:
                return found
    return found


def refused(engine: Engine) -> int:
    """How many records the projection of ``engine`` refused (projection_errors)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.projection_errors)).scalar_one())


def refusal_difference(live: int, rebuilt: int) -> Difference | None:
    """Both sides must refuse the same records: a rebuild that refuses fewer (or more)
    than the live side is a difference of its own, beside the rows that differ."""
    if live == rebuilt:
        return None
    return Difference("projection_errors", {"records": "refused"}, "count", live, rebuilt)


def verdict(identical: bool, moved: bool, live: int, rebuilt: int, differences: int) -> str:
    """One line that says what verify found, refused records included."""
    if identical:
        if not live:
            return "identical"
        return f"identical; {live} record{'s' if live != 1 else ''} refused on both sides"
    if moved and not differences:
        return "not verified: the live projector moved past the cut; run again"
    refusals = (
        f"; {live} refused live, {rebuilt} by the rebuild"
        if live != rebuilt
        else (f"; {live} refused on both sides" if live else "")
    )
    return f"{differences} difference{'s' if differences != 1 else ''}{refusals}"
