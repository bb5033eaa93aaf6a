"""The pure fold of schedule events into workflow_schedules.

A schedule's events share one key (its schedule id), so they arrive in the order
they were written and each carries Temporal's snapshot at that moment: the row is
the last event's snapshot. No state is read back; a copy of an event (a producer
retry, a replay) writes the same row again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from projections.changes import Change, Coordinates, Upsert
from schemas.schedule import ScheduleEvent

SCHEDULES = "workflow_schedules"


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def fold_schedule_event(event: ScheduleEvent, at: Coordinates) -> tuple[Change, ...]:
    values: dict[str, Any] = {
        "tenant": event.tenant,
        "definition_id": event.definition_id,
        "name": event.name,
        "last_event_type": event.type,
        "note": event.note,
        "updated_at": event.occurred_at.astimezone(UTC),
        **at.provenance(str(event.event_id)),
    }
    if event.type == "ScheduleDeleted":
        # What it last ran stays readable; it will run nothing more.
        values.update({"state": "deleted", "paused": False, "next_run_at": None})
        if event.last_run_at is not None:
            values["last_run_at"] = _utc(event.last_run_at)
    else:
        values.update(
            {
                "state": "active",
                "version": event.version,
                "spec": event.spec,
                "overlap": event.overlap,
                "paused": event.paused,
                "next_run_at": _utc(event.next_run_at),
                "last_run_at": _utc(event.last_run_at),
            }
        )
    return (Upsert(SCHEDULES, {"schedule_id": event.schedule_id}, values),)
