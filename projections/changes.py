"""Row changes: the plain data a fold returns and the applier writes.

A batch coalesces its changes per primary key before touching the database, so a run
that receives 30 events in one batch is written once, not 30 times.

Coordinates and changes are named tuples rather than dataclasses: the applier makes
several per record, and a tuple is several times cheaper to build than a frozen
dataclass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

# The primary key of every projection table, spelled out rather than read off
# projections.tables so that the folds, which build changes, need no SQLAlchemy; a unit
# test keeps the two in step.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "projection_checkpoints": ("projection", "topic", "partition"),
    "projection_errors": ("projection", "topic", "partition", "offset"),
    "workflow_action_invocations": ("run_id", "seq"),
    "workflow_definitions": ("tenant", "definition_id", "version"),
    "workflow_event_deliveries": ("audit_id", "delivery_key"),
    "workflow_human_tasks": ("task_id",),
    "workflow_operator_actions": ("action_id",),
    "workflow_run_logs": ("run_id", "seq"),
    "workflow_run_steps": ("run_id", "started_seq"),
    "workflow_run_waits": ("run_id", "wait_id"),
    "workflow_runs": ("run_id",),
    "workflow_runtime_events": ("audit_id",),
    "workflow_schedules": ("schedule_id",),
}


def _key_getter(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    get = itemgetter(*names)
    if len(names) > 1:
        return get
    return lambda key: (get(key),)


# Per table, the primary key tuple of a key mapping (ChangeSet.add runs once per fold).
_KEY_OF = {name: _key_getter(names) for name, names in PRIMARY_KEYS.items()}


class Coordinates(NamedTuple):
    """Where a record sits in Kafka: what every projection row points back to."""

    topic: str
    partition: int
    offset: int

    def provenance(self, event_id: str | None) -> dict[str, Any]:
        return {
            "source_topic": self.topic,
            "source_partition": self.partition,
            "source_offset": self.offset,
            "source_event_id": event_id,
        }


class Upsert(NamedTuple):
    """Insert the row named by ``key``, or update only the columns in ``values``."""

    table: str
    key: Mapping[str, Any]
    values: Mapping[str, Any]


class Delete(NamedTuple):
    table: str
    key: Mapping[str, Any]


class DeleteRun(NamedTuple):
    """Delete every row of one run in ``table`` (a reset rebuilds the run's rows)."""

    table: str
    run_id: str


Change = Upsert | Delete | DeleteRun


@dataclass
class ChangeSet:
    """Changes of one batch, merged per row: later values win, a delete drops what came
    before it for that row."""

    upserts: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = field(default_factory=dict)
    deletes: dict[tuple[str, tuple[Any, ...]], Mapping[str, Any]] = field(default_factory=dict)
    # (table, run_id) of DeleteRun changes; they run before every upsert of the batch
    run_deletes: set[tuple[str, str]] = field(default_factory=set)

    def add(self, change: Change) -> None:
        if isinstance(change, DeleteRun):
            self._delete_run(change)
            return
        table, key = change[0], change[1]
        slot = (table, _KEY_OF[table](key))
        if isinstance(change, Delete):
            self.upserts.pop(slot, None)
            self.deletes[slot] = key
            return
        row = self.upserts.get(slot)
        if row is None:
            self.upserts[slot] = {**key, **change.values}
        else:
            row.update(change.values)

    def _delete_run(self, change: DeleteRun) -> None:
        # Rows of the run changed earlier in the batch go too; the statement itself
        # removes those written by earlier batches.
        for slot in [
            s
            for s, row in self.upserts.items()
            if s[0] == change.table and row.get("run_id") == change.run_id
        ]:
            del self.upserts[slot]
        for slot in [
            s
            for s, key in self.deletes.items()
            if s[0] == change.table and key.get("run_id") == change.run_id
        ]:
            del self.deletes[slot]
        self.run_deletes.add((change.table, change.run_id))

    def extend(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.add(change)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes) + len(self.run_deletes)
