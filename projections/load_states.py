"""Read back from the projection tables the states the folds continue from: runs
(with their open waits and running steps), audit records and definitions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, select, tuple_

from projections import tables as t
from projections.fold_batch import AuditStates, DefinitionKey, DefinitionStates
from projections.fold_ingress import AuditState, DefinitionState
from projections.fold_runtime import RUN_COLUMNS, RunRow, RunState

_CHUNK = 500  # keys per IN (...) lookup: far below every driver's parameter limit


def _rows_in(
    conn: Connection,
    columns: Sequence[ColumnElement[Any]],
    key: ColumnElement[Any],
    keys: Sequence[Any],
    *where: ColumnElement[bool],
) -> Iterator[Any]:  # rows, unpacked by the callers
    for start in range(0, len(keys), _CHUNK):
        chunk = list(keys[start : start + _CHUNK])
        yield from conn.execute(select(*columns).where(key.in_(chunk), *where))


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def load_runs(conn: Connection, run_ids: Sequence[str]) -> dict[str, RunState]:
    runs, w, s = t.workflow_runs, t.workflow_run_waits, t.workflow_run_steps
    rows: dict[str, RunRow] = {}
    for row in _rows_in(conn, [runs.c[name] for name in RUN_COLUMNS], runs.c.run_id, run_ids):
        data = dict(row._mapping)
        for name in ("started_at", "completed_at", "updated_at"):
            data[name] = _utc(data[name])
        rows[data["run_id"]] = RunRow(**data)
    waits: dict[str, set[str]] = defaultdict(set)
    open_waits = _rows_in(
        conn, [w.c.run_id, w.c.wait_id], w.c.run_id, run_ids, w.c.status == "OPEN"
    )
    for run_id, wait_id in open_waits:
        waits[run_id].add(wait_id)
    steps: dict[str, list[tuple[int, str]]] = defaultdict(list)
    running = _rows_in(
        conn,
        [s.c.run_id, s.c.started_seq, s.c.step_path],
        s.c.run_id,
        run_ids,
        s.c.status == "RUNNING",
    )
    for run_id, seq, path in running:
        steps[run_id].append((seq, path))
    return {
        run_id: RunState(
            row,
            frozenset(waits.get(run_id, ())),
            tuple((path, seq) for seq, path in sorted(steps.get(run_id, ()))),
        )
        for run_id, row in rows.items()
    }


def load_audits(conn: Connection, ids: Sequence[str]) -> AuditStates:
    a, d = t.workflow_runtime_events, t.workflow_event_deliveries
    found: dict[str, tuple[int, int, datetime | None, datetime | None, int]] = {}
    columns = [
        a.c.audit_id,
        a.c.source_partition,
        a.c.source_offset,
        a.c.received_at,
        a.c.last_received_at,
        a.c.audit_count,
    ]
    for key, partition, offset, received, last, count in _rows_in(conn, columns, a.c.audit_id, ids):
        found[key] = (partition, offset, _utc(received), _utc(last), count)
    keys: dict[str, set[str]] = defaultdict(set)
    for key, dkey in _rows_in(conn, [d.c.audit_id, d.c.delivery_key], d.c.audit_id, ids):
        keys[key].add(dkey)
    return {
        key: AuditState(p, o, received, last, count, frozenset(keys.get(key, ())))
        for key, (p, o, received, last, count) in found.items()
    }


def load_definitions(conn: Connection, keys: Sequence[DefinitionKey]) -> DefinitionStates:
    d = t.workflow_definitions
    columns = [
        d.c.tenant,
        d.c.definition_id,
        d.c.version,
        d.c.source_partition,
        d.c.source_offset,
        d.c.hash,
    ]
    key = tuple_(d.c.tenant, d.c.definition_id, d.c.version)
    return {
        (tenant, def_id, version): DefinitionState(partition, offset, digest)
        for tenant, def_id, version, partition, offset, digest in _rows_in(conn, columns, key, keys)
    }
