"""The routing-state snapshot codec: what goes in comes out, chunked and bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processors import snapshot
from processors.horizon import HorizonSet
from processors.router_index import RouterIndex
from processors.snapshot import FollowerState
from schemas.audit import AuditRecord
from tests.unit.test_router_index import created, ev

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HORIZON = timedelta(days=1)


def _state(waits: int) -> FollowerState:
    index = RouterIndex(horizon=HORIZON)
    for n in range(waits):
        index.apply(created(f"r{n}", f"w{n}", key=f"k{n % 7}", at=T0))
    index.apply(
        ev(
            "WaitResolved",
            "r0",
            {"wait_id": "w0", "resolution": "RESOLVED", "matched_event_id": "e0"},
        )
    )
    index.workflow_ids["r1"] = "flowledger:trigger:acme:d:e"
    completed = HorizonSet(HORIZON)
    completed.add("event:acme:e0", T0)
    held = AuditRecord(
        event_id="e9",
        tenant="acme",
        event_type="paid",
        correlation_key="k1",
        received_at=T0,
        source_topic="t",
        source_partition=2,
        source_offset=7,
    )
    return FollowerState(index, completed, {"event:acme:e9": held}, {"rt": {0: 12, 1: 3}})


def test_a_snapshot_round_trips() -> None:
    state = _state(50)
    encoded = snapshot.encode(state, "s1", T0)
    back = snapshot.decode(encoded.chunks, HORIZON)
    assert back.index.waits == state.index.waits
    assert back.index.matching("acme", "paid", "k1") == state.index.matching("acme", "paid", "k1")
    assert back.index.workflow_id("r1") == "flowledger:trigger:acme:d:e"
    assert back.index.resolved_by.get(("acme", "e0"), []) == [("r0", "w0")]
    assert "event:acme:e0" in back.completed
    assert back.pending_held == state.pending_held
    assert back.positions == {"rt": {0: 12, 1: 3}}
    assert encoded.manifest["waits"] == 49 and encoded.manifest["chunks"] == len(encoded.chunks)


def test_a_big_snapshot_is_cut_into_record_sized_chunks() -> None:
    encoded = snapshot.encode(_state(20_000), "s2", T0)
    assert all(len(c) <= snapshot.CHUNK_BYTES for c in encoded.chunks)
    assert len(snapshot.decode(encoded.chunks, HORIZON).index.waits) == 19_999


def test_damaged_chunks_are_refused() -> None:
    encoded = snapshot.encode(_state(10), "s3", T0)
    with pytest.raises(snapshot.SnapshotUnreadable):
        snapshot.decode([encoded.chunks[0][:-5]], HORIZON)


@pytest.mark.parametrize("size", [0, 1, snapshot.DUMP_ITEMS, snapshot.DUMP_ITEMS + 1, 1000])
def test_the_document_is_written_in_pieces_as_one_dump_would_write_it(size: int) -> None:
    import json

    state = _state(size + 1)
    for n in range(size):
        state.completed.add(f"event:acme:e{n}", T0)
        state.index.workflow_ids[f"r{n}"] = f"flowledger:run:r{n}"
        state.pending_held[f"event:acme:h{n}"] = state.pending_held["event:acme:e9"]
    document = snapshot._document(state)
    assert snapshot.dumps(document) == json.dumps(document, separators=(",", ":"))
