"""Apply a batch of Kafka records to the projection tables inside the caller's
transaction: decode, load the state the folds need, fold, write the coalesced rows, the
refusals and the checkpoints. Kafka is not touched here, so tests drive it with plain
records against a SQLite file."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, cast

from pydantic import ValidationError
from sqlalchemy import Connection, Delete, Dialect, Engine, and_, delete, select, tuple_
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from projections import db, statements
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
from projections.fold_runtime import RUN_COLUMNS, TERMINAL, RunRow, RunState, fold_rows
from projections.statements import Statement, insert_ignore
from schemas.audit import AuditRecord
from schemas.codes import RECORD_EMPTY
from schemas.definition_record import DefinitionRecord
from schemas.runtime import RUNTIME_EVENT_ADAPTER, RuntimeEvent
from topics.serde import RecordRefused, decode_audit, decode_definition, decode_runtime

Kind = Literal["runtime", "audit", "definitions"]
Slot = tuple[str, int]  # (topic, partition)
DEFAULT_PROJECTION = "core"
_CHUNK = 500  # rows per IN (...) lookup: far below every driver's parameter limit
_EXCERPT = 2000
# Run states kept in memory between batches; past this the cache starts over (from
# the database), which bounds memory without ever being wrong.
RUN_CACHE_LIMIT = 200_000


class Incoming(NamedTuple):
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
    next_offsets: dict[Slot, int] = field(default_factory=dict)
    # The runs this batch changed, with the partition of the record that last did: the
    # applier's cache takes them once the transaction has committed.
    runs: dict[str, tuple[Slot, RunState]] = field(default_factory=dict)

    def add(self, other: BatchResult) -> None:
        self.applied += other.applied
        self.skipped += other.skipped
        self.errors += other.errors
        self.rows += other.rows
        self.runs.update(other.runs)


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
        raise RecordRefused("record has no value", code=RECORD_EMPTY, reason="null value")
    # The JSON-native validators are the fast path; serde's decoders run only on a
    # failure, to produce the same refusal (field and reason) as everywhere else.
    with contextlib.suppress(ValidationError):
        if item.kind == "runtime":
            return RUNTIME_EVENT_ADAPTER.validate_json(value)
        if item.kind == "audit":
            return AuditRecord.model_validate_json(value)
        return DefinitionRecord.model_validate_json(value)
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


@dataclass
class Writes:
    """A batch's row changes as statements, in the order they must run: deletes, then
    one bulk upsert per (table, columns)."""

    deletes: list[Delete] = field(default_factory=list)
    upserts: list[Statement] = field(default_factory=list)
    rows: int = 0

    def run(self, conn: Connection) -> None:
        for statement in self.deletes:
            conn.execute(statement)
        for upsert in self.upserts:
            statements.run(conn, upsert)


def _writes(dialect: Dialect, folded: _Folded) -> Writes:
    changes = folded.changes
    out = Writes(rows=len(changes) + len(folded.touched))
    for (table_name, _), key in changes.deletes.items():
        table = t.TABLES[table_name]
        out.deletes.append(delete(table).where(and_(*(table.c[k] == v for k, v in key.items()))))
    groups: dict[tuple[str, frozenset[str]], list[dict[str, Any]]] = defaultdict(list)
    for (table_name, _), row in changes.upserts.items():
        groups[(table_name, frozenset(row))].append(row)
    whole: list[dict[str, Any]] = []
    progress: list[dict[str, Any]] = []
    for run_id, (_, state) in folded.touched.items():
        (whole if run_id in folded.full else progress).append(vars(state.row))
    groups[("workflow_runs", _RUN_COLUMN_SET)].extend(whole)
    groups[("workflow_runs", _RUN_PROGRESS_COLUMNS)].extend(progress)
    for (table_name, columns), rows in groups.items():
        upsert = statements.upsert_rows(dialect, table_name, columns, rows)
        if upsert is not None:
            out.upserts.append(upsert)
    return out


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
        conn.execute(insert_ignore(conn.dialect.name, t.projection_errors), rows)
    return len(rows)


def _definition_slot(item: Incoming, record: Any) -> tuple[str, str, int]:
    if isinstance(record, DefinitionRecord):
        return (record.tenant, record.definition_id, record.version)
    key = parse_definition_key((item.key or b"").decode("utf-8", errors="replace"))
    assert key is not None  # unreadable tombstone keys are refused while decoding
    return (key["tenant"], key["definition_id"], key["version"])


AuditStates = dict[str, AuditState]
DefinitionStates = dict[tuple[str, str, int], DefinitionState]


@dataclass
class _Folded:
    changes: ChangeSet
    # the runs changed, with their final state: their rows are written once per batch
    touched: dict[str, tuple[Slot, RunState]]
    full: set[str]  # runs whose whole row is written (new, started or completed)
    applied: int
    skipped: int


def _ingress_keys(
    decoded: Sequence[Decoded],
) -> tuple[list[str], list[tuple[str, str, int]]]:
    audit_ids = sorted({audit_id(r) for _, r in decoded if isinstance(r, AuditRecord)})
    def_keys = sorted(
        {_definition_slot(item, r) for item, r in decoded if item.kind == "definitions"}
    )
    return audit_ids, def_keys


def _load_ingress(
    conn: Connection, decoded: Sequence[Decoded]
) -> tuple[AuditStates, DefinitionStates]:
    audit_ids, def_keys = _ingress_keys(decoded)
    audits = _load_audits(conn, audit_ids) if audit_ids else {}
    defs = _load_definitions(conn, def_keys) if def_keys else {}
    return audits, defs


def _fold(
    decoded: Sequence[Decoded],
    runs: dict[str, RunState | None],
    audits: AuditStates,
    defs: DefinitionStates,
) -> _Folded:
    """Fold decoded records (in partition order) into coalesced changes: pure, on the
    states given, which it updates in place.

    ``runs`` holds the state of every run the records name (None: not in the
    database), ``audits`` and ``defs`` those of the audit records and definitions
    they name that exist."""
    changes = ChangeSet()
    touched: dict[str, tuple[Slot, RunState]] = {}
    full: set[str] = set()
    applied = skipped = 0
    for item, record in decoded:
        if item.kind == "runtime":
            event = cast(RuntimeEvent, record)
            run_id = event.run_id
            folded = fold_rows(event, item.at, runs[run_id])
            if folded is None:
                skipped += 1
                continue
            new_state, run_changes = folded
            if runs[run_id] is None or event.type in _FULL_ROW_EVENTS:
                full.add(run_id)
            runs[run_id] = new_state
            touched[run_id] = ((item.at.topic, item.at.partition), new_state)
            applied += 1
            for change in run_changes:
                changes.add(change)
            continue
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
        else:
            # A definitions tombstone; its key was checked when decoding.
            raw_key = (item.key or b"").decode("utf-8", errors="replace")
            dkey = _definition_slot(item, None)
            tomb = fold_definition_tombstone(raw_key, item.at, defs.get(dkey))
            assert tomb is not None
            if tomb.state is not None:
                defs[dkey] = tomb.state
            ok, new = tomb.applied, tomb.changes
        if ok:
            applied += 1
            changes.extend(new)
        else:
            skipped += 1
    return _Folded(changes, touched, full, applied, skipped)


_RUN_COLUMN_SET = frozenset(RUN_COLUMNS)
# What the events in the middle of a run change (with the NOT NULL columns, which an
# INSERT must carry even when it turns into an UPDATE): writing only these for a run
# already in the database skips re-serializing its input on every batch.
_RUN_PROGRESS_COLUMNS = frozenset(
    {
        "run_id",
        "tenant",
        "status",
        "current_step_path",
        "updated_at",
        "last_seq",
        "continued_as_new_count",
        "source_topic",
        "source_partition",
        "source_offset",
        "source_event_id",
    }
)
_FULL_ROW_EVENTS = frozenset({"RunStarted", "RunCompleted"})


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


def _apply_decoded(
    conn: Connection, decoded: Sequence[Decoded], runs: dict[str, RunState | None]
) -> BatchResult:
    """Fold and write ``decoded``; ``runs`` (the states before it) is left unchanged."""
    audits, defs = _load_ingress(conn, decoded)
    folded = _fold(decoded, dict(runs), audits, defs)
    writes = _writes(conn.dialect, folded)
    writes.run(conn)
    return BatchResult(
        applied=folded.applied, skipped=folded.skipped, rows=writes.rows, runs=folded.touched
    )


def _checkpoints(
    conn: Connection, projection: str, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int]:
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


def read_checkpoints(
    conn: Connection, projection: str = DEFAULT_PROJECTION
) -> dict[tuple[str, int], int]:
    cp = t.projection_checkpoints
    query = select(cp.c.topic, cp.c.partition, cp.c.next_offset).where(
        cp.c.projection == projection
    )
    return {(topic, p): offset for topic, p, offset in conn.execute(query)}


class RunCache:
    """Run states between batches, so a batch reads from the database only the runs
    it has not seen before.

    An entry is only ever a copy of what the database holds: the cache keeps, per
    partition, the checkpoint its entries are valid at, and a batch that finds a
    different checkpoint stored (another instance applied that partition meanwhile,
    or a transaction of ours failed after all) drops that partition's entries first.
    States join the cache only after their transaction has committed."""

    def __init__(self, limit: int = RUN_CACHE_LIMIT) -> None:
        self.limit = limit
        self.states: dict[str, tuple[Slot, RunState]] = {}
        self.valid_at: dict[Slot, int] = {}

    def forget(self, slots: Iterable[Slot]) -> None:
        gone = set(slots)
        if not gone:
            return
        for slot in gone:
            self.valid_at.pop(slot, None)
        self.states = {k: v for k, v in self.states.items() if v[0] not in gone}

    def clear(self) -> None:
        self.states.clear()
        self.valid_at.clear()

    def sync(self, stored: dict[Slot, int]) -> None:
        """Drop what the stored checkpoints show to be stale."""
        stale = [slot for slot, at in stored.items() if self.valid_at.get(slot) != at]
        self.forget(stale)
        for slot in stale:
            self.valid_at[slot] = stored[slot]

    def lookup(
        self, run_ids: Iterable[str], slots: dict[str, Slot]
    ) -> tuple[dict[str, RunState | None], list[str]]:
        """Cached states, and the runs to read from the database."""
        found: dict[str, RunState | None] = {}
        missing: list[str] = []
        for run_id in run_ids:
            entry = self.states.get(run_id)
            # An entry from another partition (the topic was re-partitioned) may be
            # stale: only the owner of a run's current partition keeps it current.
            if entry is not None and entry[0] == slots[run_id]:
                found[run_id] = entry[1]
            else:
                missing.append(run_id)
        return found, missing

    def committed(self, result: BatchResult) -> None:
        for slot, end in result.next_offsets.items():
            if self.valid_at.get(slot) is not None:
                self.valid_at[slot] = end
        states = self.states
        for run_id, entry in result.runs.items():
            # Nothing normally follows the end of a run (a late copy is read back), and
            # a partition forgotten meanwhile must not regain entries.
            if entry[1].row.status in TERMINAL or entry[0] not in self.valid_at:
                states.pop(run_id, None)
            else:
                states[run_id] = entry
        if len(states) > self.limit:
            states.clear()


class Applier:
    """Applies batches inside the caller's transaction, remembering run states between
    batches. Call ``committed(result)`` once the transaction that applied ``result``
    has committed; without it the cache falls back to the database, which is always
    right."""

    def __init__(self, projection: str = DEFAULT_PROJECTION, cache: RunCache | None = None):
        self.projection = projection
        self.cache = cache if cache is not None else RunCache()

    def forget(self, slots: Iterable[Slot]) -> None:
        self.cache.forget(slots)

    def committed(self, result: BatchResult) -> None:
        self.cache.committed(result)

    def apply(self, conn: Connection, records: Sequence[Incoming]) -> BatchResult:
        """Apply ``records`` (in partition order) and advance the checkpoints of their
        partitions, all inside the caller's transaction. Records below a partition's
        stored checkpoint were applied by an earlier transaction and are skipped."""
        if not records:
            return BatchResult()
        projection = self.projection
        partitions = sorted({(r.at.topic, r.at.partition) for r in records})
        stored = _checkpoints(conn, projection, partitions)
        self.cache.sync(stored)
        todo = [r for r in records if r.at.offset >= stored.get((r.at.topic, r.at.partition), 0)]
        decoded, refused = _decode_all(todo)
        runs = self._runs(conn, decoded)
        try:
            with conn.begin_nested():
                result = _apply_decoded(conn, decoded, runs)
        except StatementError as exc:
            if not _is_data_error(exc):
                raise
            # A record the database refuses must not block the batch (or crash-loop
            # the projector): redo the batch one record at a time and record the
            # culprit.
            result, culprits = _apply_one_by_one(conn, decoded, runs)
            refused.extend(culprits)
        result.skipped += len(records) - len(todo)
        result.errors = _write_refusals(conn, projection, refused)
        ends = _ends(records)
        statements.run(conn, _checkpoint_rows(conn.dialect, projection, ends, stored))
        result.next_offsets = {slot: max(end, stored.get(slot, 0)) for slot, end in ends.items()}
        return result

    # -- pipelined: plan a batch on one thread, write it on another ---------------------

    def plan(
        self,
        engine: Engine,
        records: Sequence[Incoming],
        written: Mapping[Slot, int],
        after: Plan | None = None,
    ) -> Plan:
        """Decode and fold ``records`` without writing, assuming each partition's stored
        checkpoint is where ``after`` (the plan still being written) leaves it, or else
        at ``written``; ``write`` checks that assumption inside its transaction. States
        come from ``after``, then the cache, then the committed tables."""
        ahead = after.result.next_offsets if after is not None else {}
        starts = {
            slot: ahead.get(slot, written.get(slot, 0))
            for slot in {(r.at.topic, r.at.partition) for r in records}
        }
        todo = [r for r in records if r.at.offset >= starts[(r.at.topic, r.at.partition)]]
        decoded, refused = _decode_all(todo)
        slots = _run_slots(decoded)
        runs: dict[str, RunState | None] = {}
        pending = after.result.runs if after is not None else {}
        for run_id, slot in slots.items():
            entry = pending.get(run_id)
            if entry is not None and entry[0] == slot:
                runs[run_id] = entry[1]
        cached, missing = self.cache.lookup((r for r in slots if r not in runs), slots)
        runs.update(cached)
        audit_ids, def_keys = _ingress_keys(decoded)
        audits: AuditStates = {}
        defs: DefinitionStates = {}
        if after is not None:
            audits = {k: after.audits[k] for k in audit_ids if k in after.audits}
            defs = {k: after.defs[k] for k in def_keys if k in after.defs}
        audits_missing = [k for k in audit_ids if k not in audits]
        defs_missing = [k for k in def_keys if k not in defs]
        if missing or audits_missing or defs_missing:
            with db.read_connection(engine) as conn:
                loaded = _load_runs(conn, sorted(missing)) if missing else {}
                if audits_missing:
                    audits.update(_load_audits(conn, audits_missing))
                if defs_missing:
                    defs.update(_load_definitions(conn, defs_missing))
            for run_id in missing:
                runs[run_id] = loaded.get(run_id)
        folded = _fold(decoded, runs, audits, defs)
        ends = _ends(records)
        result = BatchResult(
            applied=folded.applied,
            skipped=folded.skipped + len(records) - len(todo),
            errors=len(refused),
            runs=folded.touched,
            next_offsets={slot: max(end, starts[slot]) for slot, end in ends.items()},
        )
        writes = _writes(engine.dialect, folded)
        result.rows = writes.rows
        checkpoints = _checkpoint_rows(engine.dialect, self.projection, ends, starts)
        return Plan(records, starts, writes, refused, checkpoints, result, audits, defs)

    def write(self, conn: Connection, plan: Plan) -> None:
        """Write a plan inside the caller's transaction; raises StalePlan (and writes
        nothing) unless every checkpoint it covers is where the plan assumed."""
        stored = _checkpoints(conn, self.projection, sorted(plan.starts))
        moved = {s: stored.get(s, 0) for s, at in plan.starts.items() if stored.get(s, 0) != at}
        if moved:
            raise StalePlan(moved)
        plan.writes.run(conn)
        _write_refusals(conn, self.projection, plan.refusals)
        statements.run(conn, plan.checkpoints)

    def written(self, plan: Plan) -> None:
        """A plan's transaction has committed: its states join the cache."""
        self.cache.sync(plan.starts)
        self.cache.committed(plan.result)

    def _runs(self, conn: Connection, decoded: Sequence[Decoded]) -> dict[str, RunState | None]:
        slots = _run_slots(decoded)
        runs, missing = self.cache.lookup(slots, slots)
        loaded = _load_runs(conn, sorted(missing)) if missing else {}
        for run_id in missing:
            runs[run_id] = loaded.get(run_id)
        return runs


_CHECKPOINT_COLUMNS = frozenset({"projection", "topic", "partition", "next_offset", "updated_at"})


def _checkpoint_rows(
    dialect: Dialect, projection: str, ends: dict[Slot, int], stored: dict[Slot, int]
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
        if end > stored.get((topic, p), 0)
    ]
    return statements.upsert_rows(dialect, "projection_checkpoints", _CHECKPOINT_COLUMNS, rows)


def _ends(records: Sequence[Incoming]) -> dict[Slot, int]:
    """The offset after the last record of each partition."""
    ends: dict[Slot, int] = {}
    for r in records:
        slot = (r.at.topic, r.at.partition)
        ends[slot] = max(ends.get(slot, 0), r.at.offset + 1)
    return ends


def _run_slots(decoded: Sequence[Decoded]) -> dict[str, Slot]:
    """The partition each run's records came from, in first-seen order."""
    slots: dict[str, Slot] = {}
    for item, record in decoded:
        if item.kind == "runtime":
            # only runtime events come from the runtime topic (see _decode)
            slots[cast(RuntimeEvent, record).run_id] = (item.at.topic, item.at.partition)
    return slots


class StalePlan(Exception):
    """The stored checkpoints are not where a plan assumed (another instance applied
    those partitions meanwhile, or the batch before it failed): the batch must be
    applied afresh."""

    def __init__(self, moved: dict[Slot, int]) -> None:
        super().__init__(f"checkpoints moved: {sorted(moved.items())}")
        self.moved = moved


@dataclass
class Plan:
    """A batch decoded and folded, its writes ready to run (see Applier.plan)."""

    records: Sequence[Incoming]
    starts: dict[Slot, int]
    writes: Writes
    refusals: list[Refusal]
    checkpoints: Statement | None
    result: BatchResult
    # the audit and definition states after the batch, for the plan that follows
    audits: AuditStates
    defs: DefinitionStates


def apply_batch(
    conn: Connection, records: Sequence[Incoming], projection: str = DEFAULT_PROJECTION
) -> BatchResult:
    """Apply ``records`` with no memory of earlier batches (every state is read from the
    database); see ``Applier.apply``."""
    return Applier(projection).apply(conn, records)


def _apply_one_by_one(
    conn: Connection, decoded: Sequence[Decoded], runs: dict[str, RunState | None]
) -> tuple[BatchResult, list[Refusal]]:
    total = BatchResult()
    culprits: list[Refusal] = []
    current = dict(runs)
    for item, record in decoded:
        try:
            with conn.begin_nested():
                one = _apply_decoded(conn, [(item, record)], current)
        except StatementError as exc:
            if not _is_data_error(exc):
                raise
            reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0]
            culprits.append(
                Refusal(item.at, item.key, item.value, "RECORD_REFUSED_BY_DATABASE", reason)
            )
            continue
        total.add(one)
        for run_id, (_, state) in one.runs.items():
            current[run_id] = state
    return total, culprits
