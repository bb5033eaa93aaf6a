"""Schedule events: what became of a definition's Temporal Schedule, on
flowledger.runtime.v1 keyed by schedule_id (so one schedule's events stay in order).

Temporal's schedule is the authority; each event carries a snapshot of what Temporal
said about it right after the change (paused, overlap, next and last run times), so
the projection of a schedule is the last event's snapshot."""

from __future__ import annotations

import uuid
from typing import Any, Literal, get_args

from pydantic import Field

from schemas.base import NonEmptyStr, Record, Timestamp

OverlapPolicy = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "allow_all"]
OVERLAP_POLICIES: tuple[str, ...] = get_args(OverlapPolicy)

ScheduleEventType = Literal[
    # created or replaced by a publish or by the reconciler
    "ScheduleUpserted",
    # removed: its definition was retired, or no longer names it
    "ScheduleDeleted",
    "SchedulePaused",
    "ScheduleUnpaused",
    "ScheduleTriggered",
    "ScheduleBackfilled",
    # the reconciler's look at Temporal found the next or last run time moved on
    "ScheduleObserved",
]
SCHEDULE_EVENT_TYPES: frozenset[str] = frozenset(get_args(ScheduleEventType))


class ScheduleEvent(Record):
    event_id: uuid.UUID
    type: ScheduleEventType
    schedule_id: NonEmptyStr
    tenant: NonEmptyStr
    definition_id: NonEmptyStr
    name: NonEmptyStr
    occurred_at: Timestamp
    # The definition version the schedule's runs pin; None once deleted.
    version: int | None = Field(default=None, ge=1)
    # cron / interval_ms / at, timezone, jitter and catch-up as authored.
    spec: dict[str, Any] = Field(default_factory=dict)
    overlap: OverlapPolicy | None = None
    paused: bool = False
    next_run_at: Timestamp | None = None
    last_run_at: Timestamp | None = None
    # Who asked (an operator's --by, "publish", "reconciler"), and why.
    requested_by: str | None = None
    note: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def is_schedule_event(data: Any) -> bool:
    """Whether a decoded JSON value on the runtime topic is a schedule event rather
    than a run's event."""
    return isinstance(data, dict) and data.get("type") in SCHEDULE_EVENT_TYPES
