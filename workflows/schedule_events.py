"""Schedule events on flowledger.runtime.v1: what Temporal said about a schedule right
after a change, keyed by the schedule id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from schemas.schedule import OverlapPolicy, ScheduleEvent, ScheduleEventType
from topics import clients
from topics.catalogue import RUNTIME
from topics.codes import KAFKA_UNAVAILABLE
from topics.producing import Outgoing, produce_and_flush
from topics.serde import encode


@dataclass(frozen=True)
class Snapshot:
    """One schedule as Temporal describes it."""

    schedule_id: str
    tenant: str
    definition_id: str
    name: str
    version: int | None
    spec: dict[str, Any]
    overlap: str | None
    paused: bool
    note: str | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    runs: int = 0
    running: list[str] = field(default_factory=list)
    owner: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "schedule_id": self.schedule_id,
            "tenant": self.tenant,
            "definition_id": self.definition_id,
            "name": self.name,
            "version": self.version,
            "spec": self.spec,
            "overlap": self.overlap,
            "paused": self.paused,
            "note": self.note,
            "next_run_at": _iso(self.next_run_at),
            "last_run_at": _iso(self.last_run_at),
            "runs": self.runs,
            "running": list(self.running),
        }

    def moved(self, other: Snapshot | None) -> bool:
        """Whether what the projection shows differs from `other`'s."""
        if other is None:
            return True
        keys = ("version", "overlap", "paused", "next_run_at", "last_run_at", "spec")
        return any(getattr(self, k) != getattr(other, k) for k in keys)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def schedule_event(
    kind: str,
    found: Snapshot,
    requested_by: str | None,
    note: str | None = None,
    details: dict[str, Any] | None = None,
) -> ScheduleEvent:
    return ScheduleEvent(
        event_id=uuid.uuid4(),
        type=cast(ScheduleEventType, kind),
        schedule_id=found.schedule_id,
        tenant=found.tenant or "unknown",
        definition_id=found.definition_id or "unknown",
        name=found.name or "unknown",
        occurred_at=datetime.now(UTC),
        version=found.version,
        spec=found.spec,
        overlap=cast(OverlapPolicy | None, found.overlap),
        paused=found.paused,
        next_run_at=found.next_run_at,
        last_run_at=found.last_run_at,
        requested_by=requested_by,
        note=note if note is not None else found.note,
        details=details or {},
    )


def _produce(settings: Settings, events: Sequence[ScheduleEvent]) -> None:
    topic = settings.topic(RUNTIME)
    items = [Outgoing(topic, e.schedule_id.encode("utf-8"), encode(e)) for e in events]
    producer = clients.producer(settings)
    timeout = settings.kafka.request_timeout_s
    try:
        done = produce_and_flush(producer, items, timeout)
    finally:
        producer.flush(timeout)
    if done.failed:
        raise ServiceUnavailable(
            f"Kafka did not acknowledge {len(done.failed)} schedule event(s): {done.failed[0][1]}",
            code=KAFKA_UNAVAILABLE,
        )


async def publish_events(settings: Settings, events: Sequence[ScheduleEvent]) -> None:
    if events:
        await asyncio.to_thread(_produce, settings, list(events))
