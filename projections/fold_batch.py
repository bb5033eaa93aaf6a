"""Fold a decoded batch (in partition order) into coalesced row changes: pure, on the
states the caller loaded, which it updates in place."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from projections.changes import ChangeSet
from projections.fold_ingress import (
    AuditState,
    DefinitionState,
    audit_id,
    fold_audit,
    fold_definition,
    fold_definition_tombstone,
    fold_operator_action,
    parse_definition_key,
)
from projections.fold_runtime import RunState, fold_rows
from projections.fold_schedules import fold_schedule_event
from projections.records import Decoded, Incoming, Slot
from schemas.audit import AuditRecord
from schemas.definition_record import DefinitionRecord
from schemas.operator import OperatorAction
from schemas.runtime import RuntimeEvent
from schemas.schedule import ScheduleEvent

DefinitionKey = tuple[str, str, int]
AuditStates = dict[str, AuditState]
DefinitionStates = dict[DefinitionKey, DefinitionState]
RunStates = dict[str, RunState | None]  # None: the run is not in the database
_FULL_ROW_EVENTS = frozenset({"RunStarted", "RunCompleted", "RunReconciled", "RunReset"})


@dataclass
class Folded:
    changes: ChangeSet
    # the runs changed, with their final state: their rows are written once per batch
    touched: dict[str, tuple[Slot, RunState]]
    full: set[str]  # runs whose whole row is written (new, started or completed)
    applied: int
    skipped: int
    # (topic, "applied" | "skipped") -> records, for the projector's metrics
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)


def definition_key(item: Incoming, record: object) -> DefinitionKey:
    if isinstance(record, DefinitionRecord):
        return (record.tenant, record.definition_id, record.version)
    key = parse_definition_key((item.key or b"").decode("utf-8", errors="replace"))
    assert key is not None  # unreadable tombstone keys are refused while decoding
    return (key["tenant"], key["definition_id"], key["version"])


def run_slots(decoded: Sequence[Decoded]) -> dict[str, Slot]:
    """The partition each run's records came from, in first-seen order."""
    slots: dict[str, Slot] = {}
    for item, record in decoded:
        # only run and schedule events come from the runtime topic (records.decode_all);
        # an exact class check, as isinstance on a model costs a metaclass call
        if item.kind == "runtime" and type(record) is not ScheduleEvent:
            slots[cast(RuntimeEvent, record).run_id] = (item.at.topic, item.at.partition)
    return slots


def ingress_keys(decoded: Sequence[Decoded]) -> tuple[list[str], list[DefinitionKey]]:
    """The audit ids and definition keys a batch names."""
    audit_ids = sorted({audit_id(r) for _, r in decoded if type(r) is AuditRecord})
    def_keys = sorted(
        {definition_key(item, r) for item, r in decoded if item.kind == "definitions"}
    )
    return audit_ids, def_keys


def fold_batch(
    decoded: Sequence[Decoded], runs: RunStates, audits: AuditStates, defs: DefinitionStates
) -> Folded:
    """``runs`` holds the state of every run the records name, ``audits`` and ``defs``
    those of the audit records and definitions they name that exist."""
    changes = ChangeSet()
    touched: dict[str, tuple[Slot, RunState]] = {}
    full: set[str] = set()
    applied = skipped = 0
    outcomes: Counter[tuple[str, str]] = Counter()
    # run events per topic, counted here and added to outcomes once
    runs_applied: Counter[str] = Counter()
    runs_skipped: Counter[str] = Counter()
    add = changes.add
    for item, record in decoded:
        at = item.at
        if item.kind == "runtime" and type(record) is not ScheduleEvent:
            event = cast(RuntimeEvent, record)
            run_id = event.run_id
            state = runs[run_id]
            folded = fold_rows(event, at, state)
            if folded is None:
                runs_skipped[at.topic] += 1
                continue
            new_state, run_changes = folded
            if state is None or event.type in _FULL_ROW_EVENTS:
                full.add(run_id)
            runs[run_id] = new_state
            touched[run_id] = ((at.topic, at.partition), new_state)
            runs_applied[at.topic] += 1
            for change in run_changes:
                add(change)
            continue
        if isinstance(record, ScheduleEvent):
            applied += 1
            outcomes[(at.topic, "applied")] += 1
            changes.extend(fold_schedule_event(record, at))
            continue
        if isinstance(record, OperatorAction):
            applied += 1
            outcomes[(item.at.topic, "applied")] += 1
            changes.extend(fold_operator_action(record, item.at))
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
            dkey = definition_key(item, None)
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
        outcomes[(item.at.topic, "applied" if ok else "skipped")] += 1
    for topic, count in runs_applied.items():
        outcomes[(topic, "applied")] += count
    for topic, count in runs_skipped.items():
        outcomes[(topic, "skipped")] += count
    applied += runs_applied.total()
    skipped += runs_skipped.total()
    return Folded(changes, touched, full, applied, skipped, outcomes)
