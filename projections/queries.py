"""Read functions over the projection tables, returning the plain dicts of the CLI
contract (ARCHITECTURE §10). Timestamps come out as ISO-8601 UTC strings."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, func, select

from flowledger.errors import CheckFailed, InvalidInput, NotFound
from projections import tables as t
from schemas.runtime import TERMINAL_STATUSES
from workflows.codes import RUN_NOT_FOUND, RUN_WAIT_TIMEOUT

TERMINAL = tuple(sorted(TERMINAL_STATUSES))
RUN_STATUSES = ("RUNNING", "WAITING", *TERMINAL)


def run_status(wanted: str | None, field: str, **context: Any) -> str | None:
    """A run-status filter as the tables spell it (upper case); refused when it names
    no status a run can have."""
    if wanted is None:
        return None
    value = wanted.upper()
    if value not in RUN_STATUSES:
        raise InvalidInput(
            f"unknown run status {wanted!r}",
            field=field,
            allowed=list(RUN_STATUSES),
            **context,
        )
    return value


WAIT_STATUSES = ("OPEN", "RESOLVED", "TIMED_OUT", "CANCELED")
AUDIT_STATUSES = ("matched", "unmatched", "error")
DEFAULT_LIMIT = 1000


class RunNotFound(NotFound):
    code = RUN_NOT_FOUND

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r} in the projection", run_id=run_id)


class RunWaitTimeout(CheckFailed):
    code = RUN_WAIT_TIMEOUT


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _pick(row: Mapping[Any, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {f: iso(row[f]) if isinstance(row[f], datetime) else row[f] for f in fields}


RUN_FIELDS = (
    "run_id",
    "tenant",
    "definition_id",
    "version",
    "status",
    "current_step_path",
    "input",
    "output",
    "error",
    "started_at",
    "completed_at",
    "updated_at",
    "definition_hash",
    "parent_run_id",
    "root_run_id",
    "last_seq",
    "semantics_version",
)
STEP_FIELDS = (
    "step_path",
    "step_id",
    "step_type",
    "iteration",
    "status",
    "output",
    "error",
    "started_at",
    "completed_at",
    "started_seq",
)
WAIT_FIELDS = (
    "wait_id",
    "run_id",
    "wait_type",
    "event_type",
    "correlation_key",
    "status",
    "created_at",
    "resolved_at",
    "matched_event_id",
    "tenant",
    "step_path",
    "timeout_at",
    "task_id",
)
TASK_FIELDS = (
    "task_id",
    "run_id",
    "task_type",
    "title",
    "status",
    "form_schema",
    "response",
    "tenant",
    "description",
    "context",
    "step_path",
    "completed_by",
    "created_at",
    "completed_at",
)
AUDIT_FIELDS = (
    "event_id",
    "tenant",
    "event_type",
    "correlation_key",
    "correlation_source",
    "correlation_detail",
    "error_code",
    "error_message",
    "received_at",
    "status",
    "event_name",
    "occurred_at",
    "last_received_at",
    "audit_count",
)
LOG_FIELDS = ("seq", "level", "message", "details", "occurred_at")
DEFINITION_FIELDS = (
    "tenant",
    "definition_id",
    "version",
    "hash",
    "name",
    "description",
    "trigger_event_type",
    "published_at",
)


def _rows(conn: Connection, query: Select[Any], fields: Sequence[str]) -> list[dict[str, Any]]:
    return [_pick(row._mapping, fields) for row in conn.execute(query)]


def _narrowed(query: Select[Any], table: Table, limit: int | None, **equal: Any) -> Select[Any]:
    """``query`` with ``column = value`` for every filter given (None: not filtered on;
    a tuple or frozenset: any of its values, as for the tenants of an API token) and
    the row limit."""
    for column, value in equal.items():
        if isinstance(value, tuple | frozenset):
            query = query.where(table.c[column].in_(sorted(value)))
        elif value is not None:
            query = query.where(table.c[column] == value)
    return query if limit is None else query.limit(limit)


# A page of runs ends at this (updated_at, run_id): the next page starts after it.
RunCursor = tuple[datetime, str]


def list_runs(
    conn: Connection,
    *,
    tenant: str | tuple[str, ...] | None = None,
    status: str | None = None,
    definition_id: str | None = None,
    correlation_key: str | None = None,
    after: RunCursor | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """Most recently changed first. ``correlation_key``: runs that waited (or wait) on
    it; ``after``: the runs past that point of this same order."""
    r, w = t.workflow_runs, t.workflow_run_waits
    query = select(r).order_by(r.c.updated_at.desc(), r.c.run_id)
    if correlation_key is not None:
        waited = select(w.c.run_id).where(w.c.correlation_key == correlation_key)
        query = query.where(r.c.run_id.in_(waited))
    if after is not None:
        at, run_id = after
        query = query.where(
            (r.c.updated_at < at) | ((r.c.updated_at == at) & (r.c.run_id > run_id))
        )
    query = _narrowed(query, r, limit, tenant=tenant, status=status, definition_id=definition_id)
    return _rows(conn, query, RUN_FIELDS)


def find_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    r = t.workflow_runs
    found = _rows(conn, select(r).where(r.c.run_id == run_id), RUN_FIELDS)
    return found[0] if found else None


def get_run(conn: Connection, run_id: str) -> dict[str, Any]:
    run = find_run(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def show_run(conn: Connection, run_id: str) -> dict[str, Any]:
    run = get_run(conn, run_id)
    s, lg = t.workflow_run_steps, t.workflow_run_logs
    steps = _rows(
        conn, select(s).where(s.c.run_id == run_id).order_by(s.c.started_seq), STEP_FIELDS
    )
    logs = _rows(conn, select(lg).where(lg.c.run_id == run_id).order_by(lg.c.seq), LOG_FIELDS)
    return {"run": run, "steps": steps, "waits": list_waits(conn, run_id=run_id), "logs": logs}


def list_waits(
    conn: Connection,
    *,
    run_id: str | None = None,
    status: str | None = None,
    tenant: str | tuple[str, ...] | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    w = t.workflow_run_waits
    query = select(w).order_by(w.c.created_at, w.c.run_id, w.c.wait_id)
    query = _narrowed(query, w, limit, run_id=run_id, status=status, tenant=tenant)
    return _rows(conn, query, WAIT_FIELDS)


def list_tasks(
    conn: Connection,
    *,
    status: str | None = None,
    run_id: str | None = None,
    tenant: str | tuple[str, ...] | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    h = t.workflow_human_tasks
    query = select(h).order_by(h.c.created_at, h.c.task_id)
    query = _narrowed(query, h, limit, status=status, run_id=run_id, tenant=tenant)
    return _rows(conn, query, TASK_FIELDS)


def list_audit(
    conn: Connection,
    *,
    tenant: str | tuple[str, ...] | None = None,
    event_type: str | None = None,
    correlation_key: str | None = None,
    status: str | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    a, d = t.workflow_runtime_events, t.workflow_event_deliveries
    query = _narrowed(
        select(a).order_by(a.c.received_at, a.c.audit_id),
        a,
        limit,
        tenant=tenant,
        event_type=event_type,
        correlation_key=correlation_key,
        status=status,
    )
    rows = list(conn.execute(query))
    deliveries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    ids = [row.audit_id for row in rows]
    for start in range(0, len(ids), 500):
        dq = (
            select(d.c.audit_id, d.c.run_id, d.c.wait_id, d.c.kind, d.c.outcome)
            .where(d.c.audit_id.in_(ids[start : start + 500]))
            .order_by(d.c.audit_id, d.c.delivery_key)
        )
        for audit_id, run_id, wait_id, kind, outcome in conn.execute(dq):
            deliveries[audit_id].append(
                {"run_id": run_id, "wait_id": wait_id, "kind": kind, "outcome": outcome}
            )
    out = []
    for row in rows:
        item = _pick(row._mapping, AUDIT_FIELDS)
        item["deliveries"] = deliveries.get(row.audit_id, [])
        out.append(item)
    return out


OPERATOR_FIELDS = (
    "action_id",
    "action",
    "outcome",
    "code",
    "requested_by",
    "requested_at",
    "tenant",
    "run_id",
    "task_id",
    "reason",
    "message",
    "details",
)


def list_operator_actions(
    conn: Connection,
    *,
    tenant: str | tuple[str, ...] | None = None,
    run_id: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """Operator requests, oldest first."""
    o = t.workflow_operator_actions
    query = select(o).order_by(o.c.requested_at, o.c.action_id)
    query = _narrowed(query, o, limit, tenant=tenant, run_id=run_id, action=action, outcome=outcome)
    return _rows(conn, query, OPERATOR_FIELDS)


def list_definitions(
    conn: Connection,
    *,
    tenant: str | tuple[str, ...] | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    d = t.workflow_definitions
    query = select(d).order_by(d.c.tenant, d.c.definition_id, d.c.version)
    query = _narrowed(query, d, limit, tenant=tenant)
    return _rows(conn, query, DEFINITION_FIELDS)


def list_errors(conn: Connection, *, limit: int | None = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    e = t.projection_errors
    query = _narrowed(select(e).order_by(e.c.topic, e.c.partition, e.c.offset), e, limit)
    fields = ("projection", "topic", "partition", "offset", "record_key", "code", "reason")
    return _rows(conn, query, fields)


def projection_errors(
    conn: Connection, *, limit: int | None = DEFAULT_LIMIT
) -> list[dict[str, Any]]:
    """Records the projector refused, in log order, as `projections errors` shows them."""
    e = t.projection_errors
    query = _narrowed(select(e).order_by(e.c.topic, e.c.partition, e.c.offset), e, limit)
    return [
        {
            "topic": row.topic,
            "partition": row.partition,
            "offset": row.offset,
            "code": row.code,
            "message": row.reason,
            "when": iso(row.recorded_at),
            "projection": row.projection,
            "record_key": row.record_key,
            "problems": row.problems,
            "value_excerpt": row.value_excerpt,
        }
        for row in conn.execute(query)
    ]


def projection_error_counts(conn: Connection) -> dict[tuple[str, int], int]:
    """Refused records per (topic, partition)."""
    e = t.projection_errors
    query = select(e.c.topic, e.c.partition, func.count()).group_by(e.c.topic, e.c.partition)
    return {(topic, partition): int(n) for topic, partition, n in conn.execute(query)}


def wait_for_run(
    engine: Engine,
    run_id: str,
    *,
    timeout: float,
    status: str | None = None,
    interval: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the run reaches ``status`` (any terminal status when None).

    Raises RunWaitTimeout when the deadline passes with the run known but elsewhere, and
    RunNotFound when the run never appeared in the projection."""
    wanted = (status,) if status is not None else TERMINAL
    deadline = clock() + timeout
    run: dict[str, Any] | None = None
    while True:
        with engine.connect() as conn:
            run = find_run(conn, run_id)
        if run is not None and run["status"] in wanted:
            return run
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(interval, remaining))
    if run is None:
        raise RunNotFound(run_id)
    raise RunWaitTimeout(
        f"run {run_id} did not reach {' or '.join(wanted)} within {timeout:g}s "
        f"(it is {run['status']})",
        run_id=run_id,
        expected=list(wanted),
        current_status=run["status"],
        run=run,
    )
