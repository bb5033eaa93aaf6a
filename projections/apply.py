"""The one projection write path. A batch of Kafka records is planned (decoded, folded
on the states it continues from, turned into bulk statements) and then written with its
refusals and checkpoints inside one transaction. ``Applier.apply`` does both in the
caller's transaction; ``plan`` and ``write`` split them so that a batch can be folded
while the one before it is still being written (see projections.pipeline). Kafka is not
touched here, so tests drive it with plain records against a SQLite file."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Delete, Dialect, Engine, and_, delete
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from projections import db, statements
from projections import tables as t
from projections.checkpoints import DEFAULT_PROJECTION, advance, lock_checkpoints
from projections.codes import RECORD_REFUSED_BY_DATABASE
from projections.fold_batch import (
    AuditStates,
    DefinitionStates,
    Folded,
    RunStates,
    fold_batch,
    ingress_keys,
    run_slots,
)
from projections.fold_runtime import RUN_COLUMNS, RunState
from projections.load_states import load_audits, load_definitions, load_runs
from projections.records import Decoded, Incoming, Refusal, Slot, decode_all, ends, slot
from projections.run_cache import RunCache
from projections.statements import Statement, insert_ignore

_EXCERPT = 2000
Reader = Callable[[], AbstractContextManager[Connection]]


@dataclass
class BatchResult:
    applied: int = 0
    skipped: int = 0  # duplicates, stale seqs, records already behind a checkpoint
    errors: int = 0
    rows: int = 0
    # (topic, "applied" | "skipped" | "refused") -> records; sums to the batch's size
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Planning plus writing the batch (set by the pipeline), for the projector's metrics
    seconds: float = 0.0
    next_offsets: dict[Slot, int] = field(default_factory=dict)
    # The runs this batch changed, with the partition of the record that last did: the
    # applier's cache takes them once the transaction has committed.
    runs: dict[str, tuple[Slot, RunState]] = field(default_factory=dict)


class States(NamedTuple):
    """What the folds of a batch continue from."""

    runs: RunStates
    audits: AuditStates
    defs: DefinitionStates

    def copy(self) -> States:
        return States(dict(self.runs), dict(self.audits), dict(self.defs))


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


def _writes(dialect: Dialect, folded: Folded) -> Writes:
    changes = folded.changes
    out = Writes(rows=len(changes) + len(folded.touched))
    for table_name, run_id in sorted(changes.run_deletes):
        table = t.TABLES[table_name]
        out.deletes.append(delete(table).where(table.c.run_id == run_id))
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


# Errors that a record's content can cause inside the database (a constraint, a value
# the column refuses). Connection and lock errors are not among them: those propagate
# so the batch is retried instead of being recorded as the record's fault.
_DATA_ERRORS = (IntegrityError, DataError)


def _is_data_error(exc: StatementError) -> bool:
    if isinstance(exc, _DATA_ERRORS):
        return True
    # A bind-time failure (the driver refused a Python value) is not a DBAPIError.
    return not isinstance(exc, DBAPIError)


class StalePlan(Exception):
    """The stored checkpoints are not where a plan assumed (another instance applied
    those partitions meanwhile, or the batch before it failed): the batch must be
    applied afresh."""

    def __init__(self, moved: dict[Slot, int]) -> None:
        super().__init__(f"checkpoints moved: {sorted(moved.items())}")
        self.moved = moved


@dataclass
class Plan:
    """A batch decoded and folded, its writes ready to run."""

    records: Sequence[Incoming]
    starts: dict[Slot, int]  # the stored checkpoints the plan assumes
    decoded: list[Decoded]
    before: States
    writes: Writes
    refusals: list[Refusal]
    checkpoints: Statement | None
    result: BatchResult
    # the audit and definition states after the batch, for the plan that follows
    audits: AuditStates
    defs: DefinitionStates


class Applier:
    """Plans and writes batches, remembering run states between them. Call
    ``committed(result)`` (or ``written(plan)``) once the transaction that wrote a
    batch has committed; without it the cache falls back to the database, which is
    always right."""

    def __init__(self, projection: str = DEFAULT_PROJECTION, cache: RunCache | None = None):
        self.projection = projection
        self.cache = cache if cache is not None else RunCache()

    def forget(self, slots: Iterable[Slot]) -> None:
        self.cache.forget(slots)

    def committed(self, result: BatchResult) -> None:
        self.cache.committed(result.next_offsets, result.runs)

    def written(self, plan: Plan) -> None:
        """A plan's transaction has committed: its states join the cache."""
        self.cache.sync(plan.starts)
        self.committed(plan.result)

    def apply(self, conn: Connection, records: Sequence[Incoming]) -> BatchResult:
        """Plan and write ``records`` (in partition order) inside the caller's
        transaction, which first locks their partitions' checkpoints and so re-reads
        everything. Records below a stored checkpoint were applied by an earlier
        transaction and are skipped; a record the database refuses is recorded and
        the rest of the batch applied."""
        if not records:
            return BatchResult()
        stored = lock_checkpoints(conn, self.projection, sorted({slot(r) for r in records}))
        self.cache.sync(stored)
        plan = self._plan(records, stored, None, conn.dialect, lambda: nullcontext(conn))
        try:
            with conn.begin_nested():
                plan.writes.run(conn)
        except StatementError as exc:
            if not _is_data_error(exc):
                raise
            # A record the database refuses must not block the batch (or crash-loop
            # the projector): redo the batch one record at a time and record the
            # culprit.
            self._one_by_one(conn, plan)
        self._close(conn, plan)
        return plan.result

    def plan(
        self,
        engine: Engine,
        records: Sequence[Incoming],
        written: Mapping[Slot, int],
        after: Plan | None = None,
    ) -> Plan:
        """Plan ``records`` without writing, assuming each partition's stored checkpoint
        is where ``after`` (the plan still being written) leaves it, or else at
        ``written``; ``write`` checks that assumption inside its transaction. States
        come from ``after``, then the cache, then the committed tables."""
        ahead = after.result.next_offsets if after is not None else {}
        starts = {s: ahead.get(s, written.get(s, 0)) for s in {slot(r) for r in records}}
        return self._plan(
            records, starts, after, engine.dialect, lambda: db.read_connection(engine)
        )

    def write(self, conn: Connection, plan: Plan) -> None:
        """Write a plan inside the caller's transaction; raises StalePlan (and writes
        nothing) unless every checkpoint it covers is where the plan assumed."""
        stored = lock_checkpoints(conn, self.projection, sorted(plan.starts))
        moved = {s: stored.get(s, 0) for s, at in plan.starts.items() if stored.get(s, 0) != at}
        if moved:
            raise StalePlan(moved)
        plan.writes.run(conn)
        self._close(conn, plan)

    def _plan(
        self,
        records: Sequence[Incoming],
        starts: Mapping[Slot, int],
        after: Plan | None,
        dialect: Dialect,
        read: Reader,
    ) -> Plan:
        todo = [r for r in records if r.at.offset >= starts.get(slot(r), 0)]
        decoded, refused = decode_all(todo)
        before = self._states(decoded, after, read)
        after_states = before.copy()
        folded = fold_batch(decoded, *after_states)
        writes = _writes(dialect, folded)
        batch_ends = ends(records)
        result = BatchResult(
            applied=folded.applied,
            skipped=folded.skipped + len(records) - len(todo),
            errors=len(refused),
            rows=writes.rows,
            runs=folded.touched,
            outcomes=_outcomes(folded.outcomes, records, todo, refused),
            next_offsets={s: max(end, starts.get(s, 0)) for s, end in batch_ends.items()},
        )
        checkpoints = advance(dialect, self.projection, batch_ends, starts)
        return Plan(
            records,
            dict(starts),
            decoded,
            before,
            writes,
            refused,
            checkpoints,
            result,
            after_states.audits,
            after_states.defs,
        )

    def _states(self, decoded: Sequence[Decoded], after: Plan | None, read: Reader) -> States:
        """The states ``decoded`` continues from: those ``after`` leaves, then the
        cache's runs, then the tables (one connection, only when something is missing)."""
        slots = run_slots(decoded)
        runs: RunStates = {}
        pending = after.result.runs if after is not None else {}
        for run_id, at in slots.items():
            entry = pending.get(run_id)
            if entry is not None and entry[0] == at:
                runs[run_id] = entry[1]
        cached, missing = self.cache.lookup((r for r in slots if r not in runs), slots)
        runs.update(cached)
        audit_ids, def_keys = ingress_keys(decoded)
        audits: AuditStates = {}
        defs: DefinitionStates = {}
        if after is not None:
            audits = {k: after.audits[k] for k in audit_ids if k in after.audits}
            defs = {k: after.defs[k] for k in def_keys if k in after.defs}
        audits_missing = [k for k in audit_ids if k not in audits]
        defs_missing = [k for k in def_keys if k not in defs]
        if missing or audits_missing or defs_missing:
            with read() as conn:
                loaded = load_runs(conn, sorted(missing)) if missing else {}
                if audits_missing:
                    audits.update(load_audits(conn, audits_missing))
                if defs_missing:
                    defs.update(load_definitions(conn, defs_missing))
            for run_id in missing:
                runs[run_id] = loaded.get(run_id)
        return States(runs, audits, defs)

    def _one_by_one(self, conn: Connection, plan: Plan) -> None:
        """Write ``plan``'s records one per savepoint, each folded on what the ones
        before it left, and record those the database refuses."""
        result = plan.result
        behind = len(plan.records) - len(plan.decoded) - len(plan.refusals)
        result.applied = result.skipped = result.rows = 0
        result.runs = {}
        states = plan.before.copy()
        folded_outcomes: Counter[tuple[str, str]] = Counter()
        seen = {r.at for r in plan.refusals} | {entry[0].at for entry in plan.decoded}
        for entry in plan.decoded:
            item = entry[0]
            trial = states.copy()
            folded = fold_batch([entry], *trial)
            try:
                with conn.begin_nested():
                    writes = _writes(conn.dialect, folded)
                    writes.run(conn)
            except StatementError as exc:
                if not _is_data_error(exc):
                    raise
                reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0]
                plan.refusals.append(
                    Refusal(item.at, item.key, item.value, RECORD_REFUSED_BY_DATABASE, reason)
                )
                continue
            states = trial
            folded_outcomes.update(folded.outcomes)
            result.applied += folded.applied
            result.skipped += folded.skipped
            result.rows += writes.rows
            result.runs.update(folded.touched)
        result.skipped += behind
        result.errors = len(plan.refusals)
        result.outcomes = _outcomes(
            folded_outcomes, plan.records, [r for r in plan.records if r.at in seen], plan.refusals
        )

    def _close(self, conn: Connection, plan: Plan) -> None:
        """The end of a batch's transaction: its refusals and checkpoints."""
        rows = [_refusal_row(self.projection, r) for r in plan.refusals]
        if rows:
            # Re-applying a batch after a crash must not record the same refusal twice.
            conn.execute(insert_ignore(conn.dialect.name, t.projection_errors), rows)
        statements.run(conn, plan.checkpoints)


def _outcomes(
    folded: Counter[tuple[str, str]],
    records: Sequence[Incoming],
    todo: Sequence[Incoming],
    refused: Sequence[Refusal],
) -> Counter[tuple[str, str]]:
    """Per topic, what became of a batch's records: folded (applied or skipped),
    behind a stored checkpoint (skipped) or refused."""
    out = Counter(folded)
    if len(todo) < len(records):  # ``todo`` is a subset of ``records``
        fresh = {r.at for r in todo}
        for r in records:
            if r.at not in fresh:
                out[(r.at.topic, "skipped")] += 1
    for refusal in refused:
        out[(refusal.at.topic, "refused")] += 1
    return out


def apply_batch(
    conn: Connection, records: Sequence[Incoming], projection: str = DEFAULT_PROJECTION
) -> BatchResult:
    """Apply ``records`` with no memory of earlier batches (every state is read from the
    database); see ``Applier.apply``."""
    return Applier(projection).apply(conn, records)
