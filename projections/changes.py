"""Row changes: the plain data a fold returns and the applier writes.

A batch coalesces its changes per primary key before touching the database, so a run
that receives 30 events in one batch is written once, not 30 times."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from projections.tables import TABLES


@dataclass(frozen=True)
class Coordinates:
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


@dataclass(frozen=True)
class Upsert:
    """Insert the row named by ``key``, or update only the columns in ``values``."""

    table: str
    key: Mapping[str, Any]
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Delete:
    table: str
    key: Mapping[str, Any]


Change = Upsert | Delete


def _pk(table: str, key: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(key[c.name] for c in TABLES[table].primary_key.columns)


@dataclass
class ChangeSet:
    """Changes of one batch, merged per row: later values win, a delete drops what came
    before it for that row."""

    upserts: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = field(default_factory=dict)
    deletes: dict[tuple[str, tuple[Any, ...]], Mapping[str, Any]] = field(default_factory=dict)

    def add(self, change: Change) -> None:
        slot = (change.table, _pk(change.table, change.key))
        if isinstance(change, Delete):
            self.upserts.pop(slot, None)
            self.deletes[slot] = change.key
            return
        row = self.upserts.get(slot)
        if row is None:
            self.upserts[slot] = {**change.key, **change.values}
        else:
            row.update(change.values)

    def extend(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.add(change)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)
