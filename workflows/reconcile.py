"""What the reconciler publishes, decided without I/O: from the facts Temporal gives
about a run it closed on its own (terminated, timed out, or reset into a new
execution), the one runtime event that records Temporal's verdict, or nothing.

Ids and seqs are functions of those facts alone, so a reconciler that restarts and
sees the same execution again publishes the same record, and the projector's rules
for the two event types (projections.fold_runtime) make the copy change nothing.
``RunReconciled`` takes the seq after the highest the closed execution emitted (no
workflow code of that execution emits again); its event id is named apart from the
workflow's own ids (``runtime_event_id``), which a later reset may reuse."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from schemas.runtime import (
    RUNTIME_NAMESPACE,
    RunReconciled,
    RunReconciledData,
    RunReset,
    RunResetData,
)

Verdict = Literal["TERMINATED", "TIMED_OUT"]


@dataclass(frozen=True)
class Closed:
    """An execution Temporal closed without the workflow finishing it."""

    workflow_id: str
    execution_id: str
    status: Verdict
    closed_at: datetime
    reason: str | None = None
    identity: str | None = None


@dataclass(frozen=True)
class Current:
    """The workflow id's current execution, and what its history shows."""

    execution_id: str
    run_id: str
    tenant: str
    # every runtime event the execution (and those it continued from) emitted
    events: Sequence[dict[str, Any]] = field(default_factory=tuple)
    # the execution was made by a reset (its history has the reset's failed task)
    reset: bool = False
    reset_reason: str | None = None
    reset_identity: str | None = None


def highest_seq(events: Sequence[dict[str, Any]]) -> int:
    return max((int(e.get("seq", 0)) for e in events), default=0)


def emitted(batches: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The runtime events of a history's emit activities, once each (an emit scheduled
    again after a replay carries the same seqs), in seq order."""
    by_seq: dict[int, dict[str, Any]] = {}
    for batch in batches:
        for event in batch:
            by_seq.setdefault(int(event.get("seq", 0)), event)
    return [by_seq[seq] for seq in sorted(by_seq)]


def decide(closed: Closed, current: Current) -> RunReconciled | RunReset | None:
    """The record for ``closed``, given the workflow id's ``current`` execution."""
    if current.execution_id == closed.execution_id:
        seq = highest_seq(current.events) + 1
        return RunReconciled(
            event_id=uuid.uuid5(
                RUNTIME_NAMESPACE, f"{current.run_id}:reconciled:{closed.execution_id}"
            ),
            run_id=current.run_id,
            tenant=current.tenant,
            seq=seq,
            occurred_at=closed.closed_at,
            data=RunReconciledData(
                status=closed.status,
                closed_at=closed.closed_at,
                reason=closed.reason,
                identity=closed.identity,
                execution_id=closed.execution_id,
            ),
        )
    if not current.reset:
        # Superseded otherwise (an id reused for a new run): not ours to judge.
        return None
    return reset_record(closed, current)


def reset_record(closed: Closed, current: Current) -> RunReset:
    through = highest_seq(current.events)
    return RunReset(
        event_id=uuid.uuid5(
            RUNTIME_NAMESPACE, f"{current.run_id}:reset:{current.execution_id}:{through}"
        ),
        run_id=current.run_id,
        tenant=current.tenant,
        seq=through + 1,
        occurred_at=closed.closed_at,
        data=RunResetData(
            execution_id=current.execution_id,
            reset_from_execution_id=closed.execution_id,
            through_seq=through,
            reason=current.reset_reason or closed.reason,
            identity=current.reset_identity or closed.identity,
            events=list(current.events),
        ),
    )
