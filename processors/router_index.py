"""The routing index, pure: open event waits by (tenant, event_type, correlation_key),
each run's Temporal workflow id, and the early events held for a wait not seen yet.

Built only from runtime events (WaitCreated / WaitResolved / RunStarted /
RunCompleted, and the reconciler's RunReconciled / RunReset), never from the projection
database, so every processor instance can
rebuild it from the runtime topic on its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from processors.horizon import HorizonDict
from schemas.runtime import (
    RUNTIME_EVENT_ADAPTER,
    RunCompleted,
    RunReconciled,
    RunReset,
    RunStarted,
    RuntimeEvent,
    WaitCreated,
    WaitResolved,
)
from workflows.messages import run_workflow_id
from workflows.wait_rule import may_take

WaitKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class OpenWait:
    run_id: str
    wait_id: str
    tenant: str
    event_type: str
    correlation_key: str
    created_at: datetime
    # From the WaitCreated event (its own time for events written before the field).
    eligible_from: datetime

    @property
    def key(self) -> WaitKey:
        return (self.tenant, self.event_type, self.correlation_key)


def eligible(wait: OpenWait, received_at: datetime, skew: timedelta) -> bool:
    """The workflow's own rule (workflows.wait_rule), judged on the broker's receipt
    time, so routing depends neither on the processor's lag nor on when a worker got
    round to creating the wait."""
    return may_take(received_at, wait.eligible_from, skew)


@dataclass
class RouterIndex:
    waits: dict[str, OpenWait] = field(default_factory=dict)
    by_key: dict[WaitKey, dict[str, OpenWait]] = field(default_factory=dict)
    # run_id -> its open waits' ids: closing a run must not scan every open wait.
    by_run: dict[str, set[str]] = field(default_factory=dict)
    workflow_ids: dict[str, str] = field(default_factory=dict)
    # How long `resolved_by` remembers an event's resolutions: the de-duplication
    # horizon, counted from the resolution's workflow time.
    horizon: timedelta = timedelta(days=7)
    # (tenant, event_id) -> (run_id, wait_id) of the waits it resolved: a redelivered
    # event whose signal already landed before a crash still gets its delivery in the
    # audit. Event ids are unique only within a tenant.
    resolved_by: HorizonDict[tuple[str, str], list[tuple[str, str]]] = field(init=False)
    # Partitioned routing: the waits this index holds (those of its routing partition);
    # None holds every wait.
    accepts: Callable[[WaitKey], bool] | None = None

    def __post_init__(self) -> None:
        self.resolved_by = HorizonDict(self.horizon)
        # Waits closed by the event they took, since the shell last asked: an event
        # still held for such a wait (signalled by an instance that stopped before
        # auditing it again) is done (`Holding.settle`).
        self.taken: list[tuple[OpenWait, str]] = []

    def apply(self, event: RuntimeEvent) -> OpenWait | None:
        """Fold one runtime event; returns the event wait it opened, if any."""
        if isinstance(event, RunStarted):
            wid = event.data.workflow_id
            if wid and self.accepts is not None and wid == run_workflow_id(event.run_id):
                # A partition's index (one of several per instance) keeps only the
                # workflow ids that `workflow_id` could not work out from the run id.
                return None
            if wid:
                self.workflow_ids[event.run_id] = wid
        elif isinstance(event, WaitCreated):
            data = event.data
            if data.wait_type != "event" or not data.event_type or data.correlation_key is None:
                return None
            wait = OpenWait(
                event.run_id,
                data.wait_id,
                event.tenant,
                data.event_type,
                data.correlation_key,
                event.occurred_at,
                data.eligible_from or event.occurred_at,
            )
            if self.accepts is not None and not self.accepts(wait.key):
                return None
            self.add(wait)
            return wait
        elif isinstance(event, WaitResolved):
            closed = self._close(event.data.wait_id)
            matched = event.data.matched_event_id
            if closed is not None and matched:
                self.taken.append((closed, matched))
            # A partition's index keeps only the resolutions of its own waits.
            if matched and (self.accepts is None or closed is not None):
                key = (event.tenant, matched)
                found = self.resolved_by.get(key, [])
                pair = (event.run_id, event.data.wait_id)
                if pair not in found:
                    self.resolved_by.put(key, [*found, pair], event.occurred_at)
        elif isinstance(event, RunCompleted | RunReconciled):
            # A run Temporal closed (its own end, or a verdict such as a terminate)
            # takes no more events.
            self._close_run(event.run_id)
            self.workflow_ids.pop(event.run_id, None)
        elif isinstance(event, RunReset):
            # The waits are what the reset execution's history says they are.
            self._close_run(event.run_id)
            for raw in sorted(event.data.events, key=lambda e: int(e.get("seq", 0))):
                try:
                    inner = RUNTIME_EVENT_ADAPTER.validate_python(raw)
                except ValidationError:
                    continue
                if inner.run_id == event.run_id and not isinstance(inner, RunReset):
                    self.apply(inner)
        return None

    def add(self, wait: OpenWait) -> None:
        self._close(wait.wait_id)
        self.waits[wait.wait_id] = wait
        self.by_key.setdefault(wait.key, {})[wait.wait_id] = wait
        self.by_run.setdefault(wait.run_id, set()).add(wait.wait_id)

    def _close_run(self, run_id: str) -> None:
        for wait_id in list(self.by_run.get(run_id, ())):
            self._close(wait_id)

    def _close(self, wait_id: str) -> OpenWait | None:
        wait = self.waits.pop(wait_id, None)
        if wait is None:
            return None
        bucket = self.by_key.get(wait.key)
        if bucket is not None:
            bucket.pop(wait_id, None)
            if not bucket:
                del self.by_key[wait.key]
        ids = self.by_run.get(wait.run_id)
        if ids is not None:
            ids.discard(wait_id)
            if not ids:
                del self.by_run[wait.run_id]
        return wait

    def matching(self, tenant: str, event_type: str, correlation_key: str) -> list[OpenWait]:
        return list(self.by_key.get((tenant, event_type, correlation_key), {}).values())

    def workflow_id(self, run_id: str) -> str:
        return self.workflow_ids.get(run_id) or run_workflow_id(run_id)


@dataclass(frozen=True)
class HeldEvent:
    """A correlated event that matched no wait yet. ``item`` is the shell's own
    bookkeeping for it (what to signal and audit); the index never looks inside."""

    tenant: str
    event_type: str
    correlation_key: str
    event_id: str
    received_at: datetime
    expires_at: datetime
    partition: int
    offset: int
    item: Any = None

    @property
    def key(self) -> WaitKey:
        return (self.tenant, self.event_type, self.correlation_key)


@dataclass
class EarlyEvents:
    """Held events of the ingress partitions this instance owns."""

    skew: timedelta
    held: dict[WaitKey, list[HeldEvent]] = field(default_factory=dict)
    # No held event expires before this: `expire` is cheap on every loop turn.
    earliest_expiry: datetime | None = None
    # How many events are held, kept as they come and go (read on every metrics scrape).
    count: int = 0

    def hold(self, event: HeldEvent) -> None:
        bucket = self.held.setdefault(event.key, [])
        if all(h.event_id != event.event_id for h in bucket):
            bucket.append(event)
            self.count += 1
            if self.earliest_expiry is None or event.expires_at < self.earliest_expiry:
                self.earliest_expiry = event.expires_at

    def take_for(self, wait: OpenWait) -> list[HeldEvent]:
        """Held events the new wait may take, released from holding: an event that
        found its wait is done, so the commit can move past it instead of lagging for
        the whole window."""
        bucket = self.held.get(wait.key, [])
        taken = [h for h in bucket if eligible(wait, h.received_at, self.skew)]
        if taken:
            keep = [h for h in bucket if h not in taken]
            if keep:
                self.held[wait.key] = keep
            else:
                del self.held[wait.key]
            self.count -= len(taken)
        return taken

    def take_event(self, key: WaitKey, event_id: str) -> list[HeldEvent]:
        """The held copy of one event, released from holding (its wait took it)."""
        bucket = self.held.get(key, [])
        taken = [h for h in bucket if h.event_id == event_id]
        if taken:
            keep = [h for h in bucket if h.event_id != event_id]
            if keep:
                self.held[key] = keep
            else:
                del self.held[key]
            self.count -= len(taken)
        return taken

    def expire(self, now: datetime) -> list[HeldEvent]:
        if self.earliest_expiry is None or now < self.earliest_expiry:
            return []
        gone: list[HeldEvent] = []
        earliest: datetime | None = None
        for key in list(self.held):
            keep = [h for h in self.held[key] if h.expires_at > now]
            gone.extend(h for h in self.held[key] if h.expires_at <= now)
            if keep:
                self.held[key] = keep
                first = min(h.expires_at for h in keep)
                earliest = first if earliest is None or first < earliest else earliest
            else:
                del self.held[key]
        self.earliest_expiry = earliest
        self.count -= len(gone)
        return gone

    def drop_partitions(self, partitions: Iterable[int]) -> list[HeldEvent]:
        """A revoked partition's held events go with it; the new owner holds them
        again from their held audit records."""
        lost = set(partitions)
        dropped: list[HeldEvent] = []
        for key in list(self.held):
            dropped.extend(h for h in self.held[key] if h.partition in lost)
            keep = [h for h in self.held[key] if h.partition not in lost]
            if keep:
                self.held[key] = keep
            else:
                del self.held[key]
        self.count -= len(dropped)
        return dropped

    def oldest_offsets(self) -> dict[int, int]:
        """Per partition, the lowest held offset (for status and diagnostics)."""
        out: dict[int, int] = {}
        for bucket in self.held.values():
            for h in bucket:
                out[h.partition] = min(out.get(h.partition, h.offset), h.offset)
        return out

    def __len__(self) -> int:
        return self.count
