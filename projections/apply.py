"""Apply a batch of Kafka records to the projection tables inside the caller's
transaction: decode, load the state the folds need, fold, write the coalesced rows, the
refusals and the checkpoints. Kafka is not touched here, so tests drive it with plain
records against a SQLite file."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Connection, Insert, Table, and_, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from projections import tables as t
from projections.changes import ChangeSet, Coordinates
from projections.fold_ingress import (
    AuditState,
    DefinitionState,
    audit_id,
    fold_audit,
    fold_definition,
    fold_definition_tombstone,
    parse_definition_key,
)
from projections.fold_runtime import RUN_COLUMNS, RunRow, RunState, fold_runtime
from schemas.audit import AuditRecord
from schemas.definition_record import DefinitionRecord
from schemas.runtime import RUNTIME_EVENT_ADAPTER, RuntimeEvent
from topics.serde import RecordRefused, decode_audit, decode_definition, decode_runtime

Kind = Literal["runtime", "audit", "definitions"]
DEFAULT_PROJECTION = "core"
_CHUNK = 500  # rows per IN (...) lookup: far below every driver's parameter limit
_EXCERPT = 2000


@dataclass(frozen=True)
class Incoming:
    """One Kafka record as the applier sees it."""

    kind: Kind
    at: Coordinates
    key: bytes | None
    value: bytes | None


@dataclass
class BatchResult:
    applied: int = 0
    skipped: int = 0  # duplicates, stale seqs, records already behind a checkpoint
    errors: int = 0
    rows: int = 0
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, other: BatchResult) -> None:
        self.applied += other.applied
        self.skipped += other.skipped
        self.errors += other.errors
        self.rows += other.rows


@dataclass(frozen=True)
class Refusal:
    at: Coordinates
    key: bytes | None
    value: bytes | None
    code: str
    reason: str
    problems: list[dict[str, Any]] | None = None


Decoded = tuple[Incoming, RuntimeEvent | AuditRecord | DefinitionRecord | None]

# Errors that a record's content can cause inside the database (a constraint, a value
# the column refuses). Connection and lock errors are not among them: those propagate
# so the batch is retried instead of being recorded as the record's fault.
_DATA_ERRORS = (IntegrityError, DataError)


def _is_data_error(exc: StatementError) -> bool:
    if isinstance(exc, _DATA_ERRORS):
        return True
    # A bind-time failure (the driver refused a Python value) is not a DBAPIError.
    return not isinstance(exc, DBAPIError)


def _decode(item: Incoming) -> RuntimeEvent | AuditRecord | DefinitionRecord | None:
    """The typed record; None for a definitions tombstone; raises RecordRefused."""
    value = item.value
    if value is None:
        if item.kind == "definitions":
            return None
        raise RecordRefused("record has no value", code="RECORD_EMPTY", reason="null value")
    # The JSON-native validators are the fast path; serde's decoders run only on a
    # failure, to produce the same refusal (field and reason) as everywhere else.
    try:
        if item.kind == "runtime":
            return RUNTIME_EVENT_ADAPTER.validate_json(value)
        if item.kind == "audit":
            return AuditRecord.model_validate_json(value)
        return DefinitionRecord.model_validate_json(value)
    except ValidationError:
        pass
    if item.kind == "runtime":
        return decode_runtime(value)
    if item.kind == "audit":
        return decode_audit(value)
    return decode_definition(value)


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _load_runs(conn: Connection, run_ids: Sequence[str]) -> dict[str, RunState]:
    rows: dict[str, RunRow] = {}
    waits: dict[str, set[str]] = defaultdict(set)
    steps: dict[str, list[tuple[int, str]]] = defaultdict(list)
    runs, w, s = t.workflow_runs, t.workflow_run_waits, t.workflow_run_steps
    columns = [runs.c[name] for name in RUN_COLUMNS]
    for chunk in _chunks(run_ids):
        for row in conn.execute(select(*columns).where(runs.c.run_id.in_(chunk))):
            data = dict(row._mapping)
            for name in ("started_at", "completed_at", "updated_at"):
                data[name] = _utc(data[name])
            rows[data["run_id"]] = RunRow(**data)
        open_waits = select(w.c.run_id, w.c.wait_id).where(
            w.c.run_id.in_(chunk), w.c.status == "OPEN"
        )
        for run_id, wait_id in conn.execute(open_waits):
            waits[run_id].add(wait_id)
        open_steps = select(s.c.run_id, s.c.started_seq, s.c.step_path).where(
            s.c.run_id.in_(chunk), s.c.status == "RUNNING"
        )
        for run_id, seq, path in conn.execute(open_steps):
            steps[run_id].append((seq, path))
    return {
        run_id: RunState(
            row,
            frozenset(waits.get(run_id, ())),
            tuple((path, seq) for seq, path in sorted(steps.get(run_id, ()))),
        )
        for run_id, row in rows.items()
    }


def _load_audits(conn: Connection, ids: Sequence[str]) -> dict[str, AuditState]:
    a, d = t.workflow_runtime_events, t.workflow_event_deliveries
    keys: dict[str, set[str]] = defaultdict(set)
    found: dict[str, tuple[int, int, datetime | None, datetime | None, int]] = {}
    for chunk in _chunks(ids):
        query = select(
            a.c.audit_id,
            a.c.source_partition,
            a.c.source_offset,
            a.c.received_at,
            a.c.last_received_at,
            a.c.audit_count,
        ).where(a.c.audit_id.in_(chunk))
        for key, partition, offset, received, last, count in conn.execute(query):
            found[key] = (partition, offset, _utc(received), _utc(last), count)
        known = select(d.c.audit_id, d.c.delivery_key).where(d.c.audit_id.in_(chunk))
        for key, dkey in conn.execute(known):
            keys[key].add(dkey)
    return {
        key: AuditState(p, o, received, last, count, frozenset(keys.get(key, ())))
        for key, (p, o, received, last, count) in found.items()
    }


def _load_definitions(
    conn: Connection, keys: Sequence[tuple[str, str, int]]
) -> dict[tuple[str, str, int], DefinitionState]:
    d = t.workflow_definitions
    out: dict[tuple[str, str, int], DefinitionState] = {}
    for chunk in _chunks(keys):
        query = select(
            d.c.tenant,
            d.c.definition_id,
            d.c.version,
            d.c.source_partition,
            d.c.source_offset,
            d.c.hash,
        ).where(tuple_(d.c.tenant, d.c.definition_id, d.c.version).in_(list(chunk)))
        for tenant, def_id, version, partition, offset, digest in conn.execute(query):
            out[(tenant, def_id, version)] = DefinitionState(partition, offset, digest)
    return out


@lru_cache(maxsize=256)
def _upsert(dialect: str, table_name: str, columns: frozenset[str]) -> Insert:
    table = t.TABLES[table_name]
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    pk = [c.name for c in table.primary_key.columns]
    update = {name: insert.excluded[name] for name in sorted(columns) if name not in pk}
    if not update:
        return insert.on_conflict_do_nothing(index_elements=pk)
    return insert.on_conflict_do_update(index_elements=pk, set_=update)


def _insert_ignore(dialect: str, table: Table) -> Insert:
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return insert.on_conflict_do_nothing()


def _write(conn: Connection, changes: ChangeSet) -> int:
    dialect = conn.dialect.name
    for (table_name, _), key in changes.deletes.items():
        table = t.TABLES[table_name]
        conn.execute(delete(table).where(and_(*(table.c[k] == v for k, v in key.items()))))
    groups: dict[tuple[str, frozenset[str]], list[dict[str, Any]]] = defaultdict(list)
    for (table_name, _), row in changes.upserts.items():
        groups[(table_name, frozenset(row))].append(row)
    for (table_name, columns), rows in groups.items():
        conn.execute(_upsert(dialect, table_name, columns), rows)
    return len(changes)


def _refusal_row(projection: str, refusal: Refusal) -> dict[str, Any]:
    def text(raw: bytes | None) -> str | None:
        return None if raw is None else raw[:_EXCERPT].decode("utf-8", errors="replace")

    return {
        "projection": projection,
        "topic": refusal.at.topic,
        "partition": refusal.at.partition,
        "offset": refusal.at.offset,
        "record_key": text(refusal.key),
        "code": refusal.code,
        "reason": refusal.reason,
        "problems": refusal.problems,
        "value_excerpt": text(refusal.value),
        "recorded_at": datetime.now(UTC),
    }


def _write_refusals(conn: Connection, projection: str, refusals: Iterable[Refusal]) -> int:
    rows = [_refusal_row(projection, r) for r in refusals]
    if rows:
        # Re-applying a batch after a crash must not record the same refusal twice.
        conn.execute(_insert_ignore(conn.dialect.name, t.projection_errors), rows)
    return len(rows)


def _runtime(record: RuntimeEvent | AuditRecord | DefinitionRecord | None) -> RuntimeEvent | None:
    if record is None or isinstance(record, AuditRecord | DefinitionRecord):
        return None
    return record


def _definition_slot(item: Incoming, record: Any) -> tuple[str, str, int]:
    if isinstance(record, DefinitionRecord):
        return (record.tenant, record.definition_id, record.version)
    key = parse_definition_key((item.key or b"").decode("utf-8", errors="replace"))
    assert key is not None  # unreadable tombstone keys are refused while decoding
    return (key["tenant"], key["definition_id"], key["version"])


def _fold(conn: Connection, decoded: Sequence[Decoded]) -> tuple[ChangeSet, int, int]:
    """Fold decoded records (in partition order) into coalesced changes."""
    run_ids = sorted({r.run_id for _, rec in decoded if (r := _runtime(rec)) is not None})
    audit_ids = sorted({audit_id(r) for _, r in decoded if isinstance(r, AuditRecord)})
    def_keys = sorted(
        {_definition_slot(item, r) for item, r in decoded if item.kind == "definitions"}
    )
    runs = _load_runs(conn, run_ids) if run_ids else {}
    audits = _load_audits(conn, audit_ids) if audit_ids else {}
    defs = _load_definitions(conn, def_keys) if def_keys else {}
    changes = ChangeSet()
    applied = skipped = 0
    for item, record in decoded:
        if isinstance(record, AuditRecord):
            key = audit_id(record)
            folded_audit = fold_audit(record, item.at, audits.get(key))
            if folded_audit.state is not None:
                audits[key] = folded_audit.state
            ok, new = folded_audit.applied, folded_audit.changes
        elif isinstance(record, DefinitionRecord):
            dkey = (record.tenant, record.definition_id, record.version)
            folded_def = fold_definition(record, item.at, defs.get(dkey))
            if folded_def.state is not None:
                defs[dkey] = folded_def.state
            ok, new = folded_def.applied, folded_def.changes
        elif record is None:
            # A definitions tombstone; its key was checked when decoding.
            raw_key = (item.key or b"").decode("utf-8", errors="replace")
            dkey = _definition_slot(item, None)
            tomb = fold_definition_tombstone(raw_key, item.at, defs.get(dkey))
            assert tomb is not None
            if tomb.state is not None:
                defs[dkey] = tomb.state
            ok, new = tomb.applied, tomb.changes
        else:
            folded = fold_runtime(record, item.at, runs.get(record.run_id))
            if folded.state is not None:
                runs[record.run_id] = folded.state
            ok, new = folded.applied, folded.changes
        if ok:
            applied += 1
            changes.extend(new)
        else:
            skipped += 1
    return changes, applied, skipped


def _decode_all(items: Sequence[Incoming]) -> tuple[list[Decoded], list[Refusal]]:
    decoded: list[Decoded] = []
    refused: list[Refusal] = []
    for item in items:
        try:
            record = _decode(item)
        except RecordRefused as exc:
            problems = exc.context.get("problems")
            refused.append(Refusal(item.at, item.key, item.value, exc.code, exc.message, problems))
            continue
        if (
            record is None
            and fold_definition_tombstone(
                (item.key or b"").decode("utf-8", errors="replace"), item.at, None
            )
            is None
        ):
            refused.append(
                Refusal(
                    item.at,
                    item.key,
                    None,
                    "RECORD_KEY_INVALID",
                    "definitions tombstone whose key is not tenant:definition_id:version",
                )
            )
            continue
        decoded.append((item, record))
    return decoded, refused


def _apply_decoded(conn: Connection, decoded: Sequence[Decoded]) -> BatchResult:
    changes, applied, skipped = _fold(conn, decoded)
    rows = _write(conn, changes)
    return BatchResult(applied=applied, skipped=skipped, rows=rows)


def _checkpoints(
    conn: Connection, projection: str, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    cp = t.projection_checkpoints
    dialect = conn.dialect.name
    # Creating the missing rows first means the SELECT below always has rows to lock:
    # two instances that both think they own a partition queue up here instead of
    # both applying it.
    conn.execute(
        _insert_ignore(dialect, cp),
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


def read_checkpoints(
    conn: Connection, projection: str = DEFAULT_PROJECTION
) -> dict[tuple[str, int], int]:
    cp = t.projection_checkpoints
    query = select(cp.c.topic, cp.c.partition, cp.c.next_offset).where(
        cp.c.projection == projection
    )
    return {(topic, p): offset for topic, p, offset in conn.execute(query)}


def apply_batch(
    conn: Connection, records: Sequence[Incoming], projection: str = DEFAULT_PROJECTION
) -> BatchResult:
    """Apply ``records`` (in partition order) and advance the checkpoints of their
    partitions, all inside the caller's transaction. Records below a partition's stored
    checkpoint were applied by an earlier transaction and are skipped."""
    if not records:
        return BatchResult()
    partitions = sorted({(r.at.topic, r.at.partition) for r in records})
    stored = _checkpoints(conn, projection, partitions)
    todo = [r for r in records if r.at.offset >= stored.get((r.at.topic, r.at.partition), 0)]
    decoded, refused = _decode_all(todo)
    try:
        with conn.begin_nested():
            result = _apply_decoded(conn, decoded)
    except StatementError as exc:
        if not _is_data_error(exc):
            raise
        # A record the database refuses must not block the batch (or crash-loop the
        # projector): redo the batch one record at a time and record the culprit.
        result, culprits = _apply_one_by_one(conn, decoded)
        refused.extend(culprits)
    result.skipped += len(records) - len(todo)
    result.errors = _write_refusals(conn, projection, refused)
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        slot = (r.at.topic, r.at.partition)
        ends[slot] = max(ends.get(slot, 0), r.at.offset + 1)
    moved = {slot: end for slot, end in ends.items() if end > stored.get(slot, 0)}
    if moved:
        conn.execute(
            _upsert(
                conn.dialect.name,
                "projection_checkpoints",
                frozenset({"projection", "topic", "partition", "next_offset", "updated_at"}),
            ),
            [
                {
                    "projection": projection,
                    "topic": topic,
                    "partition": p,
                    "next_offset": end,
                    "updated_at": datetime.now(UTC),
                }
                for (topic, p), end in moved.items()
            ],
        )
    result.next_offsets = {slot: max(end, stored.get(slot, 0)) for slot, end in ends.items()}
    return result


def _apply_one_by_one(
    conn: Connection, decoded: Sequence[Decoded]
) -> tuple[BatchResult, list[Refusal]]:
    total = BatchResult()
    culprits: list[Refusal] = []
    for item, record in decoded:
        try:
            with conn.begin_nested():
                total.add(_apply_decoded(conn, [(item, record)]))
        except StatementError as exc:
            if not _is_data_error(exc):
                raise
            reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0]
            culprits.append(
                Refusal(item.at, item.key, item.value, "RECORD_REFUSED_BY_DATABASE", reason)
            )
    return total, culprits
