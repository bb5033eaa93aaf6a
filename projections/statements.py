"""Bulk upserts of projection rows, built once per (dialect, table, columns) and run
without SQLAlchemy's per-row parameter handling.

Every value goes through its column type's own bind processor, so what is stored is
exactly what ``conn.execute(insert, rows)`` would store. On PostgreSQL the batch
travels as one array per column that ``unnest`` turns back into rows; on SQLite as one
JSON array that ``json_each`` unpacks inside the statement. Either way it is one call
into the database per table and batch, during which Python's GIL is released, so a
writer thread runs it while the projector folds the next batch."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, Literal, NamedTuple

from sqlalchemy import Connection, Dialect, String, Table, bindparam, func, literal_column
from sqlalchemy import select as sql_select
from sqlalchemy import true as sql_true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeEngine

from projections import tables as t


class Statement(NamedTuple):
    """SQL and its parameters, ready for ``exec_driver_sql``."""

    sql: str
    parameters: Any  # a list of rows (executemany) or the parameters of one call


AnyInsert = postgresql.Insert | sqlite.Insert


def upsert(dialect: str, table_name: str, columns: frozenset[str]) -> AnyInsert:
    """INSERT ... ON CONFLICT DO UPDATE of ``columns`` (DO NOTHING when only the key)."""
    return _on_conflict(_insert(dialect, t.TABLES[table_name]), table_name, columns)


def insert_ignore(dialect: str, table: Table) -> AnyInsert:
    return _insert(dialect, table).on_conflict_do_nothing()


def _insert(dialect: str, table: Table) -> AnyInsert:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def _on_conflict(insert: AnyInsert, table_name: str, columns: frozenset[str]) -> AnyInsert:
    table = t.TABLES[table_name]
    pk = [c.name for c in table.primary_key.columns]
    update = {name: insert.excluded[name] for name in sorted(columns) if name not in pk}
    if not update:
        return insert.on_conflict_do_nothing(index_elements=pk)
    return insert.on_conflict_do_update(index_elements=pk, set_=update)


Layout = Literal["rows", "json", "columns"]


@dataclass(frozen=True)
class _Compiled:
    """A compiled bulk upsert and how to turn a row into its parameters."""

    sql: str
    names: tuple[str, ...]  # the columns, in parameter order
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool
    # "rows": one parameter set per row (executemany); "json" (SQLite): one JSON array
    # of all rows as the only parameter; "columns" (PostgreSQL): one array per column
    layout: Layout

    def values(self, rows: Iterable[dict[str, Any]]) -> list[Any]:
        get = itemgetter(*self.names)
        processed = [(i, p) for i, p in enumerate(self.processors) if p is not None]
        single = len(self.names) == 1
        out: list[Any] = []
        for row in rows:
            values = get(row)
            if single:
                values = (values,)
            if processed:
                values = list(values)
                for i, process in processed:
                    values[i] = process(values[i])
            out.append(values if self.positional else dict(zip(self.names, values, strict=True)))
        return out

    def statement(self, rows: Sequence[dict[str, Any]]) -> Statement:
        values = self.values(rows)
        if self.layout == "json":
            return Statement(self.sql, (json.dumps(values, ensure_ascii=False),))
        if self.layout == "columns":
            return Statement(
                self.sql, {f"c{i}": list(c) for i, c in enumerate(zip(*values, strict=True))}
            )
        return Statement(self.sql, [tuple(v) for v in values] if self.positional else values)


def _sqlite_json_upsert(table_name: str, names: tuple[str, ...], columns: frozenset[str]) -> str:
    source = func.json_each(bindparam("rows")).table_valued("value")
    picked = [source.c.value.op("->>")(literal_column(str(i))) for i in range(len(names))]
    rows = sql_select(*picked).select_from(source).where(sql_true())
    insert = sqlite.insert(t.TABLES[table_name]).from_select(list(names), rows)
    # "WHERE 1 = 1" keeps SQLite from reading ON CONFLICT as part of a join.
    return str(_on_conflict(insert, table_name, columns).compile(dialect=sqlite.dialect()))


def _postgres_unnest_upsert(
    dialect: Dialect, table_name: str, names: tuple[str, ...], columns: frozenset[str]
) -> str:
    """INSERT ... SELECT FROM unnest(one array per column): one statement for the whole
    batch instead of one per row (executemany), which cost the server a round of
    parse-bind-execute and the driver a parameter set per row. A batch holds each key
    once (ChangeSet), so no row is affected twice. The arrays are cast to the type
    without its length (an explicit cast to VARCHAR(n) would cut a longer value; the
    column refuses it instead, as it does with the row-by-row statement)."""
    table = t.TABLES[table_name]

    def unbounded(name: str) -> TypeEngine[Any]:
        kind = table.c[name].type
        return String() if isinstance(kind, String) else kind

    arrays = [
        bindparam(f"c{i}", type_=postgresql.ARRAY(unbounded(name))) for i, name in enumerate(names)
    ]
    source = (
        func.unnest(*arrays)
        .table_valued(*[f"v{i}" for i in range(len(names))])
        .render_derived(name="batch")
    )
    rows = sql_select(*[source.c[f"v{i}"] for i in range(len(names))])
    insert = postgresql.insert(table).from_select(list(names), rows)
    sql = str(_on_conflict(insert, table_name, columns).compile(dialect=dialect))
    # Arrays of numbers, timestamps and JSON go in the driver's binary format, several
    # times cheaper to build than the escaped text one. Text stays text: the driver
    # refuses a NUL in it with its own message, which a refusal records (in binary the
    # server would refuse it with another).
    for i, name in enumerate(names):
        if not isinstance(table.c[name].type, String):
            sql = sql.replace(f"%(c{i})s", f"%(c{i})b")
    return sql


@lru_cache(maxsize=256)
def _compiled(dialect: Dialect, table_name: str, columns: frozenset[str]) -> _Compiled:
    table = t.TABLES[table_name]
    names = tuple(c.name for c in table.columns if c.name in columns)
    processors = tuple(_processor(table, name, dialect) for name in names)
    if dialect.name == "sqlite":
        return _Compiled(
            _sqlite_json_upsert(table_name, names, columns),
            names,
            processors,
            positional=True,
            layout="json",
        )
    if dialect.name == "postgresql":
        return _Compiled(
            _postgres_unnest_upsert(dialect, table_name, names, columns),
            names,
            processors,
            positional=True,
            layout="columns",
        )
    compiled = upsert(dialect.name, table_name, columns).compile(
        dialect=dialect, column_keys=list(names)
    )
    if compiled.positional:
        assert compiled.positiontup is not None
        order = tuple(compiled.positiontup)
        processors = tuple(processors[names.index(name)] for name in order)
        names = order
    return _Compiled(compiled.string, names, processors, bool(compiled.positional), "rows")


def _processor(table: Table, name: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    process: Callable[[Any], Any] | None
    process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
    if process is not None and _same_text(process, _sqlite_timestamp):
        # SQLite stores timestamps as text; the C-level isoformat gives the same text
        # several times faster than the dialect's %-formatting.
        process = _sqlite_timestamp
    return _skip_none(process)


def _sqlite_timestamp(value: datetime | None) -> str | None:
    # The wall-clock part of isoformat is its first 26 characters (the year is always
    # four digits), with or without an offset after it: no naive copy is needed.
    return None if value is None else value.isoformat(" ", "microseconds")[:26]


_PROBES = (
    datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=UTC),
    datetime(999, 12, 31, 23, 59, 59, 999999),
)


def _same_text(process: Callable[[Any], Any], other: Callable[[Any], Any]) -> bool:
    """Whether ``process`` turns timestamps into the same text as ``other``."""
    try:
        return all(process(probe) == other(probe) for probe in _PROBES)
    except (TypeError, ValueError, AttributeError):
        return False


def _skip_none(process: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """The processor with its answer for None computed once: most JSON and timestamp
    columns of a row are empty, and serializing ``None`` each time was a good share of
    the write path."""
    if process is None:
        return None
    empty = process(None)

    def processed(value: Any) -> Any:
        return empty if value is None else process(value)

    return processed


def upsert_rows(
    dialect: Dialect, table_name: str, columns: frozenset[str], rows: Sequence[dict[str, Any]]
) -> Statement | None:
    """One bulk INSERT ... ON CONFLICT DO UPDATE of ``columns`` for every row."""
    if not rows:
        return None
    return _compiled(dialect, table_name, columns).statement(rows)


def run(conn: Connection, statement: Statement | None) -> None:
    if statement is not None:
        conn.exec_driver_sql(statement.sql, statement.parameters)


def write_rows(
    conn: Connection, table_name: str, columns: frozenset[str], rows: Sequence[dict[str, Any]]
) -> None:
    run(conn, upsert_rows(conn.dialect, table_name, columns, rows))
