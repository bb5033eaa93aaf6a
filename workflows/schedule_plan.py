"""Which Temporal Schedules the published definitions want, and what it takes to get
there from what Temporal has, decided without I/O.

A definition's schedules are those of its latest published version: publishing a
version replaces the previous version's, and a definition with no version left (all
retired) wants none."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def merge(self, other: Report) -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": sorted(self.created),
            "updated": sorted(self.updated),
            "deleted": sorted(self.deleted),
            "unchanged": len(self.unchanged),
        }


def stale(owned: Iterable[str], wanted_ids: Iterable[str]) -> list[str]:
    """The owned schedules no published definition wants any more."""
    keep = set(wanted_ids)
    return sorted(s for s in set(owned) if s not in keep)
