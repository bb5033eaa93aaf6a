"""A dry run of correlation and routing over a range of the ingress log: which key
each event would get under a (possibly new) correlation configuration, which waits
it would wake, and how that differs from what the audit records say happened.
Nothing is signalled or started."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flowledger.settings import Settings
from processors.correlation import CorrelationPaths, resolve
from topics.catalogue import AUDIT, EVENTS, RUNTIME
from topics.reader import read_json
from workflows.wait_rule import may_take


@dataclass(frozen=True)
class WaitSpan:
    """An event wait as the runtime log saw it: open from created to resolved."""

    run_id: str
    wait_id: str
    tenant: str
    event_type: str
    correlation_key: str
    created_at: datetime
    resolved_at: datetime | None = None
    # What the wait may take events from (workflows.wait_rule); its creation time for
    # waits written before WaitCreated carried it.
    eligible_from: datetime | None = None


@dataclass
class RouterOutcome:
    event_id: str | None
    tenant: str | None
    event_type: str | None
    received_at: str
    correlation: dict[str, Any]
    audited_key: str | None
    would_wake: list[dict[str, str]] = field(default_factory=list)
    did_wake: list[dict[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        wake = {(w["run_id"], w["wait_id"]) for w in self.would_wake}
        did = {(w["run_id"], w["wait_id"]) for w in self.did_wake}
        return wake != did or self.correlation.get("key") != self.audited_key

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "tenant": self.tenant,
            "event_type": self.event_type,
            "received_at": self.received_at,
            "correlation": self.correlation,
            "audited_key": self.audited_key,
            "would_wake": self.would_wake,
            "did_wake": self.did_wake,
            "changed": self.changed,
        }


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def wait_spans(runtime: Iterable[Mapping[str, Any]]) -> list[WaitSpan]:
    """Pure: every event wait with the workflow times it opened and closed."""
    opened: dict[str, WaitSpan] = {}
    closed: dict[str, datetime] = {}
    for event in runtime:
        data = event.get("data") or {}
        at = _time(event.get("occurred_at"))
        if at is None:
            continue
        if event.get("type") == "WaitCreated" and data.get("wait_type") == "event":
            opened[str(data["wait_id"])] = WaitSpan(
                str(event["run_id"]),
                str(data["wait_id"]),
                str(event["tenant"]),
                str(data.get("event_type")),
                str(data.get("correlation_key")),
                at,
                eligible_from=_time(data.get("eligible_from")) or at,
            )
        elif event.get("type") == "WaitResolved":
            closed.setdefault(str(data.get("wait_id")), at)
    return [
        WaitSpan(**{**w.__dict__, "resolved_at": closed.get(w.wait_id)}) for w in opened.values()
    ]


def route(
    event: Mapping[str, Any],
    received_at: datetime,
    spans: list[WaitSpan],
    paths: CorrelationPaths,
    skew: timedelta,
) -> tuple[dict[str, Any], list[WaitSpan]]:
    """Pure: the correlation an event gets and the waits it would wake. A wait takes
    the event when the processor's own rule lets it (workflows.wait_rule: received
    after the point the wait may take events from, within the skew tolerance) and it
    was still open then."""
    correlation = resolve(event, paths)
    found = {"key": correlation.key, "source": correlation.source, "detail": correlation.detail}
    if correlation.key is None:
        return found, []
    woken = [
        s
        for s in spans
        if (s.tenant, s.event_type, s.correlation_key)
        == (event.get("tenant"), event.get("event_type"), correlation.key)
        and may_take(received_at, s.eligible_from or s.created_at, skew)
        and (s.resolved_at is None or s.resolved_at >= received_at - skew)
    ]
    return found, woken


def dry_run(
    settings: Settings, start: datetime, end: datetime, paths: CorrelationPaths
) -> dict[str, Any]:
    skew = timedelta(seconds=settings.processor.clock_skew_tolerance_s)
    spans = wait_spans(v for _, v in read_json(settings, settings.topic(RUNTIME)))
    # Keyed by tenant and id: event ids are unique only within a tenant.
    audited: dict[tuple[str, str], dict[str, Any]] = {}
    for _, value in read_json(settings, settings.topic(AUDIT)):
        if value.get("event_id"):
            entry = audited.setdefault(
                (str(value.get("tenant")), str(value["event_id"])), {"key": None, "wake": {}}
            )
            entry["key"] = value.get("correlation_key")
            for delivery in value.get("deliveries") or []:
                if delivery.get("kind") == "signal":
                    entry["wake"][(delivery["run_id"], delivery.get("wait_id") or "")] = True
    outcomes = []
    for record, value in read_json(settings, settings.topic(EVENTS)):
        received = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
        if not (start <= received < end):
            continue
        correlation, woken = route(value, received, spans, paths, skew)
        before = audited.get(
            (str(value.get("tenant")), str(value.get("event_id"))), {"key": None, "wake": {}}
        )
        outcomes.append(
            RouterOutcome(
                event_id=value.get("event_id"),
                tenant=value.get("tenant"),
                event_type=value.get("event_type"),
                received_at=received.isoformat(),
                correlation=correlation,
                audited_key=before["key"],
                would_wake=[{"run_id": w.run_id, "wait_id": w.wait_id} for w in woken],
                did_wake=[{"run_id": r, "wait_id": w} for r, w in before["wake"]],
            )
        )
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "events": len(outcomes),
        "changed": sum(1 for o in outcomes if o.changed),
        "outcomes": [o.as_dict() for o in outcomes],
    }
