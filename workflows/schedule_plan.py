"""Which Temporal Schedules the published definitions want, and what it takes to get
there from what Temporal has, decided without I/O.

A definition's schedules are those of its latest published version: publishing a
version replaces the previous version's, and a definition with no version left (all
retired) wants none."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.definition_record import DefinitionRecord
from workflows.definitions.schedule_rules import DEFAULT_SCHEDULE_NAME, schedule_entries
from workflows.scheduled_run import schedule_id

# What a schedule's memo says, so that a namespace shared by several deployments (or
# tests) only ever has this deployment's schedules reconciled.
MEMO_OWNER = "flowledger.definitions_topic"
# In the action's memo (the part of a schedule an update can change).
MEMO_FINGERPRINT = "flowledger.fingerprint"
MEMO_SPEC_FINGERPRINT = "flowledger.spec_fingerprint"

SPEC_KEYS = ("cron", "interval_ms", "at", "timezone", "jitter_ms", "catchup_window_ms", "overlap")


@dataclass(frozen=True)
class Wanted:
    schedule_id: str
    record: DefinitionRecord
    name: str
    trigger: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        """The authored timing of the schedule (what the projection shows)."""
        return {k: self.trigger[k] for k in SPEC_KEYS if self.trigger.get(k) is not None}

    def spec_fingerprint(self) -> str:
        return _digest(self.spec())

    def fingerprint(self, task_queue: str, options: Mapping[str, Any]) -> str:
        """Changes whenever the schedule Temporal holds must change: another version,
        another trigger, another task queue or run options."""
        return _digest(
            {
                "hash": self.record.hash,
                "version": self.record.version,
                "trigger": self.trigger,
                "task_queue": task_queue,
                "options": dict(options),
            }
        )


def once_at(trigger: Mapping[str, Any]) -> datetime:
    """The second a one-time trigger runs at, in UTC: a calendar matches whole
    seconds, so a fraction of one rounds up, never into the past."""
    at = datetime.fromisoformat(str(trigger["at"])).astimezone(UTC)
    return datetime.fromtimestamp(math.ceil(at.timestamp()), UTC)


def catch_up(
    trigger: Mapping[str, Any],
    since: datetime | None,
    *,
    paused: bool,
    remaining_actions: int,
    next_action_times: Sequence[datetime],
    taken: Iterable[datetime],
) -> tuple[datetime, datetime] | None:
    """The backfill window that starts, once, a one-time schedule whose time passed
    while it was being created (or moved to that time), or None.

    Temporal takes no action for a time before its schedule existed (or before its
    last update), so such a schedule would never run. It is started only when Temporal
    itself says it will not: no time left in `next_action_times`, its one action not
    spent, and no action at that time yet. `since` is when the publish began: an `at`
    already past then is not caught up, since only a schedule that cannot have run
    before may be started this way (the reconciler, restoring a schedule deleted after
    it ran, passes None). A paused schedule takes no action, so neither does this."""
    if since is None or not trigger.get("at"):
        return None
    at = once_at(trigger)
    if at < since or paused or remaining_actions < 1 or next_action_times:
        return None
    if any(t.astimezone(UTC) == at for t in taken):
        return None
    # The spec matches that one second only: a wider window starts nothing more, and
    # covers the jitter Temporal adds to it.
    jitter = timedelta(milliseconds=int(trigger.get("jitter_ms") or 0))
    return at - timedelta(seconds=1), at + jitter + timedelta(seconds=1)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def schedules_of(record: DefinitionRecord) -> list[Wanted]:
    out = []
    for path, trigger in schedule_entries(record.definition):
        default = DEFAULT_SCHEDULE_NAME if path == "root.trigger" else None
        name = trigger.get("name") or default
        if isinstance(name, str) and name:
            out.append(
                Wanted(
                    schedule_id(record.tenant, record.definition_id, name),
                    record,
                    name,
                    dict(trigger),
                )
            )
    return out


def latest_versions(records: Iterable[DefinitionRecord]) -> dict[tuple[str, str], DefinitionRecord]:
    latest: dict[tuple[str, str], DefinitionRecord] = {}
    for record in records:
        ident = (record.tenant, record.definition_id)
        current = latest.get(ident)
        if current is None or record.version > current.version:
            latest[ident] = record
    return latest


def wanted(records: Iterable[DefinitionRecord]) -> dict[str, Wanted]:
    """Every schedule the published definitions want, by schedule id."""
    out: dict[str, Wanted] = {}
    for record in latest_versions(records).values():
        for item in schedules_of(record):
            out[item.schedule_id] = item
    return out


@dataclass
class Report:
    """What one sync or reconcile changed in Temporal."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # One-time schedules started at once: their time passed while being created.
    caught_up: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def merge(self, other: Report) -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged
        self.caught_up += other.caught_up

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": sorted(self.created),
            "updated": sorted(self.updated),
            "deleted": sorted(self.deleted),
            "unchanged": len(self.unchanged),
            "caught_up": sorted(self.caught_up),
        }


def stale(owned: Iterable[str], wanted_ids: Iterable[str]) -> list[str]:
    """The owned schedules no published definition wants any more."""
    keep = set(wanted_ids)
    return sorted(s for s in set(owned) if s not in keep)
