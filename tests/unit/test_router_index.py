"""The routing index and early-event holding, as plain data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.router_index import EarlyEvents, HeldEvent, RouterIndex
from schemas.runtime import RUNTIME_EVENT_ADAPTER, RuntimeEvent

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(seconds=2)


def ev(
    kind: str, run_id: str, data: dict[str, Any], at: datetime = T0, tenant: str = "acme"
) -> RuntimeEvent:
    return RUNTIME_EVENT_ADAPTER.validate_python(
        {
            "event_id": str(uuid.uuid4()),
            "run_id": run_id,
            "tenant": tenant,
            "seq": 1,
            "occurred_at": at.isoformat(),
            "type": kind,
            "data": data,
        }
    )


def created(
    run_id: str, wait_id: str, key: str = "k", at: datetime = T0, tenant: str = "acme"
) -> RuntimeEvent:
    return ev(
        "WaitCreated",
        run_id,
        {
            "wait_id": wait_id,
            "wait_type": "event",
            "step_path": "root.steps[0]",
            "event_type": "paid",
            "correlation_key": key,
        },
        at,
        tenant,
    )


def test_waits_are_keyed_by_tenant_type_and_key() -> None:
    index = RouterIndex()
    index.apply(created("r1", "w1", tenant="acme"))
    index.apply(created("r2", "w2", tenant="beta"))
    assert [w.run_id for w in index.matching("acme", "paid", "k")] == ["r1"]
    assert [w.run_id for w in index.matching("beta", "paid", "k")] == ["r2"]
    assert index.matching("acme", "paid", "other") == []
    assert index.matching("acme", "shipped", "k") == []


def test_resolved_and_completed_runs_close_their_waits() -> None:
    index = RouterIndex()
    index.apply(created("r1", "w1"))
    index.apply(created("r2", "w2"))
    index.apply(
        ev(
            "WaitResolved",
            "r1",
            {"wait_id": "w1", "resolution": "RESOLVED", "matched_event_id": "e1"},
        )
    )
    index.apply(ev("RunCompleted", "r2", {"status": "CANCELED"}))
    assert index.matching("acme", "paid", "k") == []
    assert index.resolved_by[("acme", "e1")] == [("r1", "w1")]


def test_a_closed_run_closes_only_its_own_waits() -> None:
    index = RouterIndex()
    index.apply(created("r1", "w1", key="a"))
    index.apply(created("r1", "w2", key="b"))
    index.apply(created("r2", "w3", key="a"))
    index.apply(ev("RunCompleted", "r1", {"status": "CANCELED"}))
    assert list(index.waits) == ["w3"]
    assert [w.wait_id for w in index.matching("acme", "paid", "a")] == ["w3"]
    assert index.matching("acme", "paid", "b") == []
    assert index.by_run == {"r2": {"w3"}}


def test_a_wait_created_again_with_another_key_leaves_no_stale_entry() -> None:
    index = RouterIndex()
    index.apply(created("r1", "w1", key="a"))
    index.apply(created("r1", "w1", key="b"))
    assert index.matching("acme", "paid", "a") == []
    assert [w.wait_id for w in index.matching("acme", "paid", "b")] == ["w1"]


def test_only_event_waits_with_a_key_are_indexed() -> None:
    index = RouterIndex()
    timer = ev("WaitCreated", "r1", {"wait_id": "t", "wait_type": "time", "step_path": "p"})
    assert index.apply(timer) is None
    assert index.waits == {}


def test_trigger_runs_keep_their_workflow_id() -> None:
    index = RouterIndex()
    index.apply(
        ev(
            "RunStarted",
            "r1",
            {
                "definition_id": "d",
                "version": 1,
                "definition_hash": "h",
                "workflow_id": "flowledger:trigger:acme:d:e",
            },
        )
    )
    assert index.workflow_id("r1") == "flowledger:trigger:acme:d:e"
    assert index.workflow_id("r2") == "flowledger:run:r2"


def held(event_id: str, at: datetime, partition: int = 0, offset: int = 0) -> HeldEvent:
    return HeldEvent(
        "acme", "paid", "k", event_id, at, at + timedelta(minutes=10), partition, offset
    )


def test_held_event_goes_to_a_wait_created_before_it_within_skew() -> None:
    index, early = RouterIndex(), EarlyEvents(SKEW)
    early.hold(held("e1", T0))
    late = index.apply(created("r1", "w1", at=T0 + timedelta(seconds=5)))
    assert late is not None and early.take_for(late) == []
    ok = index.apply(created("r2", "w2", at=T0 + timedelta(seconds=1)))
    assert ok is not None
    assert [h.event_id for h in early.take_for(ok)] == ["e1"]
    assert len(early) == 0


def test_holding_blocks_the_commit_and_expires() -> None:
    early = EarlyEvents(SKEW)
    early.hold(held("e1", T0, partition=1, offset=7))
    early.hold(held("e1", T0, partition=1, offset=7))
    early.hold(held("e2", T0 + timedelta(minutes=5), partition=1, offset=9))
    assert len(early) == 2
    assert early.oldest_offsets() == {1: 7}
    gone = early.expire(T0 + timedelta(minutes=11))
    assert [h.event_id for h in gone] == ["e1"]
    assert early.oldest_offsets() == {1: 9}
    assert [h.event_id for h in early.drop_partitions({1})] == ["e2"]
    assert len(early) == 0


def test_resolutions_remembered_for_the_horizon() -> None:
    index = RouterIndex(horizon=timedelta(hours=1))
    for n in range(3):
        at = T0 + timedelta(minutes=40 * n)
        index.apply(created(f"r{n}", f"w{n}", at=at))
        index.apply(
            ev(
                "WaitResolved",
                f"r{n}",
                {"wait_id": f"w{n}", "resolution": "RESOLVED", "matched_event_id": f"e{n}"},
                at,
            )
        )
    # A redelivered copy of the resolution adds nothing.
    index.apply(
        ev(
            "WaitResolved",
            "r2",
            {"wait_id": "w2", "resolution": "RESOLVED", "matched_event_id": "e2"},
            T0 + timedelta(minutes=80),
        )
    )
    assert index.resolved_by.prune(T0 + timedelta(minutes=81)) == 1
    assert ("acme", "e0") not in index.resolved_by
    assert index.resolved_by.get(("acme", "e1"), []) == [("r1", "w1")]
    assert index.resolved_by.get(("acme", "e2"), []) == [("r2", "w2")]
    assert index.resolved_by.forgotten == 1


def _held(event_id: str, key: str, expires: datetime) -> HeldEvent:
    return HeldEvent("acme", "paid", key, event_id, T0, expires, 0, 1)


def test_expire_skips_work_until_the_earliest_expiry() -> None:
    early = EarlyEvents(SKEW)
    assert early.expire(T0) == []
    early.hold(_held("e1", "a", T0 + timedelta(minutes=5)))
    early.hold(_held("e2", "b", T0 + timedelta(minutes=1)))
    assert early.earliest_expiry == T0 + timedelta(minutes=1)
    assert early.expire(T0 + timedelta(seconds=30)) == []
    gone = early.expire(T0 + timedelta(minutes=2))
    assert [h.event_id for h in gone] == ["e2"]
    assert early.earliest_expiry == T0 + timedelta(minutes=5)
    assert [h.event_id for h in early.expire(T0 + timedelta(minutes=6))] == ["e1"]
    assert early.earliest_expiry is None and len(early) == 0
