"""Which events a wait may take, pure: the one rule of ARCHITECTURE §5 that the router
applies to the events it holds and the workflow to the events it has buffered.

A wait may take an event that Kafka received after the run reached the point before
that wait (its start request for the first wait, the resolution of its previous wait
for a later one), minus the clock-skew tolerance between the broker's clock and
Temporal's. Nothing else about the wait (when it was created, when a worker ran it)
enters the rule, so a slow or absent worker loses no event and an event that arrived
for an earlier wait never wakes a later one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def may_take(received_at: datetime | None, eligible_from: datetime, skew: timedelta) -> bool:
    """An event without a receipt time (signalled straight to the workflow, not routed
    from Kafka) carries no evidence of being stale, so it is never refused by time."""
    if received_at is None:
        return True
    return received_at >= eligible_from - skew


def received_time(text: str | None) -> datetime | None:
    """A delivered event's ``received_at`` (ISO-8601) as an aware time; None when the
    event has none or it does not parse (then the event is judged as timeless)."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
