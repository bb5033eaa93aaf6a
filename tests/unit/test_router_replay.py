"""The router dry run's pure core: wait spans from runtime events and routing under a
correlation configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from processors.correlation import NO_PATHS, load_paths
from projections.replay.router import route, wait_spans

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def runtime(kind: str, at: datetime, **data: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "run_id": "r1",
        "tenant": "acme",
        "occurred_at": at.isoformat(),
        "data": data,
    }


SPANS = wait_spans(
    [
        runtime(
            "WaitCreated",
            T0,
            wait_id="w1",
            wait_type="event",
            event_type="ticket.updated",
            correlation_key="T-5",
        ),
        runtime("WaitResolved", T0 + timedelta(minutes=5), wait_id="w1", resolution="RESOLVED"),
        runtime("WaitCreated", T0, wait_id="t1", wait_type="time"),
    ]
)
EVENT = {
    "event_id": "e",
    "event_type": "ticket.updated",
    "tenant": "acme",
    "payload": {"ticketId": "T-5"},
}
SKEW = timedelta(seconds=2)


def test_only_event_waits_are_spans() -> None:
    assert [s.wait_id for s in SPANS] == ["w1"]
    assert SPANS[0].resolved_at == T0 + timedelta(minutes=5)


def test_a_new_path_configuration_changes_routing() -> None:
    paths = load_paths({"ticket.updated": "ticketId"})
    correlation, woken = route(EVENT, T0 + timedelta(minutes=1), SPANS, paths, SKEW)
    assert correlation == {"key": "T-5", "source": "derived", "detail": "path:ticketId"}
    assert [w.wait_id for w in woken] == ["w1"]
    correlation, woken = route(EVENT, T0 + timedelta(minutes=1), SPANS, NO_PATHS, SKEW)
    assert correlation["key"] is None and woken == []


def test_a_wait_takes_no_event_from_before_it_opened_or_after_it_closed() -> None:
    paths = load_paths({"ticket.updated": "ticketId"})
    assert route(EVENT, T0 - timedelta(minutes=1), SPANS, paths, SKEW)[1] == []
    assert route(EVENT, T0 - timedelta(seconds=1), SPANS, paths, SKEW)[1] != []
    assert route(EVENT, T0 + timedelta(minutes=6), SPANS, paths, SKEW)[1] == []
    other_tenant = {**EVENT, "tenant": "globex"}
    assert route(other_tenant, T0 + timedelta(minutes=1), SPANS, paths, SKEW)[1] == []


def test_a_wait_takes_what_the_processor_rule_lets_it_take() -> None:
    # Created late (its worker was away), eligible from the run's start request.
    late = wait_spans(
        [
            runtime(
                "WaitCreated",
                T0 + timedelta(minutes=3),
                wait_id="w2",
                wait_type="event",
                event_type="ticket.updated",
                correlation_key="T-5",
                eligible_from=T0.isoformat(),
            )
        ]
    )
    paths = load_paths({"ticket.updated": "ticketId"})
    assert [w.wait_id for w in route(EVENT, T0 + timedelta(minutes=1), late, paths, SKEW)[1]] == [
        "w2"
    ]
    assert route(EVENT, T0 - timedelta(minutes=1), late, paths, SKEW)[1] == []
