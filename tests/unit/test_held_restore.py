"""Held events restored on an assignment are offered to the waits already open: a wait
that opened while its event was held by another instance still gets it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from processors.held import Holding
from processors.router_index import RouterIndex
from schemas.audit import AuditRecord
from tests.unit.test_router_index import created, ev

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(seconds=2)
TOPIC = "flowledger.events.v1"


def _held_audit(key: str, partition: int, at: datetime) -> AuditRecord:
    return AuditRecord(
        event_id=str(uuid.uuid4()),
        event_type="paid",
        event_name="paid",
        tenant="acme",
        occurred_at=at.isoformat(),
        payload={},
        schema_version=1,
        correlation_key=key,
        correlation_source="explicit",
        correlation_detail="workflow_correlation_key",
        received_at=at,
        source_topic=TOPIC,
        source_partition=partition,
        source_offset=3,
    )


def test_restored_events_are_offered_to_waits_already_open() -> None:
    index = RouterIndex()
    # Opened before the event was received (it may take it) and after it was held.
    index.apply(created("r1", "w1", key="k1", at=T0 - timedelta(seconds=1)))
    index.apply(created("r2", "w2", key="k2", at=T0 + timedelta(minutes=1)))
    pending = {
        "event:acme:a": _held_audit("k1", 0, T0),
        "event:acme:b": _held_audit("k2", 0, T0),
        "event:acme:c": _held_audit("k1", 1, T0),  # a partition owned elsewhere
    }
    holding = Holding(SKEW, timedelta(minutes=10))
    offered = holding.restore(pending, TOPIC, {0}, T0 + timedelta(minutes=2), index)
    # w2 opened after the event: the wait rule says it may not take it.
    assert [w.wait_id for w in offered] == ["w1"]
    pairs = holding.take(offered, index.workflow_id)
    assert [(plan.completion_key, target.wait_id) for plan, target in pairs] == [
        ("event:acme:a", "w1")
    ]
    assert len(holding.early) == 1  # b is still held for a wait to come


def test_expired_events_are_not_restored() -> None:
    index = RouterIndex()
    index.apply(created("r1", "w1", key="k1", at=T0 - timedelta(seconds=1)))
    holding = Holding(SKEW, timedelta(minutes=10))
    offered = holding.restore(
        {"event:acme:a": _held_audit("k1", 0, T0)}, TOPIC, {0}, T0 + timedelta(minutes=11), index
    )
    assert offered == [] and len(holding.early) == 0


def test_a_restored_event_its_wait_already_took_is_finished_not_held() -> None:
    # The previous owner signalled it (the run's WaitResolved names it) and stopped
    # before auditing it again: it is audited now with that delivery.
    index = RouterIndex()
    index.apply(created("r1", "w1", key="k1", at=T0 - timedelta(seconds=1)))
    audit = _held_audit("k1", 0, T0)
    index.apply(
        ev(
            "WaitResolved",
            "r1",
            {"wait_id": "w1", "resolution": "RESOLVED", "matched_event_id": audit.event_id},
            T0 + timedelta(seconds=1),
        )
    )
    holding = Holding(SKEW, timedelta(minutes=10))
    offered = holding.restore({"event:acme:a": audit}, TOPIC, {0}, T0 + timedelta(minutes=1), index)
    assert offered == [] and len(holding.early) == 0
    [plan] = holding.finished
    assert [(d.run_id, d.wait_id, d.outcome) for d in plan.audit.deliveries] == [
        ("r1", "w1", "delivered")
    ]


def test_a_held_event_whose_wait_then_closes_on_it_is_finished() -> None:
    # Restored as held before its wait was read; the wait is then read together with
    # the WaitResolved naming the event (another instance signalled it).
    audit = _held_audit("k1", 0, T0)
    holding = Holding(SKEW, timedelta(minutes=10))
    holding.restore({"event:acme:a": audit}, TOPIC, {0}, T0 + timedelta(minutes=1), RouterIndex())
    assert len(holding.early) == 1
    index = RouterIndex()
    index.apply(created("r1", "w1", key="k1", at=T0 - timedelta(seconds=1)))
    index.apply(
        ev(
            "WaitResolved",
            "r1",
            {"wait_id": "w1", "resolution": "RESOLVED", "matched_event_id": audit.event_id},
            T0 + timedelta(seconds=1),
        )
    )
    holding.settle(index)
    assert len(holding.early) == 0 and index.taken == []
    [plan] = holding.finished
    assert [(d.run_id, d.wait_id) for d in plan.audit.deliveries] == [("r1", "w1")]
