"""Which waits partitions a runtime record is relayed to: every partition's index,
folded from only what it was sent, holds what an index of all the runtime records
holds for that partition, whatever the relay remembered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.router_index import RouterIndex
from processors.routing_key import wait_partition
from processors.waits_routing import RelayMemory, may_matter, targets
from schemas.runtime import RUNTIME_EVENT_ADAPTER, RuntimeEvent
from workflows.messages import run_workflow_id

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PARTITIONS = 4


def ev(kind: str, run_id: str, data: dict[str, Any]) -> RuntimeEvent:
    return RUNTIME_EVENT_ADAPTER.validate_python(
        {
            "event_id": str(uuid.uuid4()),
            "run_id": run_id,
            "tenant": "acme",
            "seq": 1,
            "occurred_at": T0.isoformat(),
            "type": kind,
            "data": data,
        }
    )


def started(run_id: str, custom: bool) -> RuntimeEvent:
    wid = f"flowledger:trigger:acme:d:{run_id}" if custom else run_workflow_id(run_id)
    return ev(
        "RunStarted",
        run_id,
        {"definition_id": "d", "version": 1, "definition_hash": "h", "workflow_id": wid},
    )


def created(run_id: str, wait_id: str, key: str | None) -> RuntimeEvent:
    data: dict[str, Any] = {"wait_id": wait_id, "wait_type": "time", "step_path": "s"}
    if key is not None:
        data |= {"wait_type": "event", "event_type": "paid", "correlation_key": key}
    return ev("WaitCreated", run_id, data)


def resolved(run_id: str, wait_id: str) -> RuntimeEvent:
    return ev("WaitResolved", run_id, {"wait_id": wait_id, "resolution": "RESOLVED"})


def completed(run_id: str) -> RuntimeEvent:
    return ev("RunCompleted", run_id, {"status": "SUCCEEDED"})


def accepts(p: int) -> Any:
    return lambda key: wait_partition(key[0], key[1], key[2], PARTITIONS) == p


def relayed(events: list[RuntimeEvent], forget_at: int) -> list[RouterIndex]:
    """Each partition's index from what a relay sent it; the relay's memory is lost
    before event ``forget_at`` (the runtime partition moved to another instance)."""
    parts = [RouterIndex(accepts=accepts(p)) for p in range(PARTITIONS)]
    memory = RelayMemory()
    for i, event in enumerate(events):
        if i == forget_at:
            memory = RelayMemory()
        to, _key = targets(event, PARTITIONS, memory)
        for p in to:
            parts[p].apply(event)
    return parts


def reference(events: list[RuntimeEvent]) -> list[RouterIndex]:
    parts = [RouterIndex(accepts=accepts(p)) for p in range(PARTITIONS)]
    for event in events:
        for index in parts:
            index.apply(event)
    return parts


def same(a: RouterIndex, b: RouterIndex) -> bool:
    return set(a.waits) == set(b.waits) and a.workflow_ids == b.workflow_ids


@st.composite
def histories(draw: st.DrawFn) -> list[RuntimeEvent]:
    events: list[RuntimeEvent] = []
    for r in range(draw(st.integers(1, 5))):
        run = f"r{r}"
        events.append(started(run, draw(st.booleans())))
        waits = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e", None]), max_size=4))
        for w, key in enumerate(waits):
            events.append(created(run, f"{run}-w{w}", key))
            if draw(st.booleans()):
                events.append(resolved(run, f"{run}-w{w}"))
        if draw(st.booleans()):
            events.append(completed(run))
    # Runs interleave on one runtime partition; each run's own order is kept.
    order = draw(st.permutations(range(len(events))))
    by_run: dict[str, list[RuntimeEvent]] = {}
    for event in events:
        by_run.setdefault(event.run_id, []).append(event)
    out = []
    for i in order:
        run = events[i].run_id
        out.append(by_run[run].pop(0))
    return out


@settings(max_examples=300, deadline=None)
@given(histories(), st.integers(0, 40))
def test_every_partition_holds_what_the_whole_log_says_of_it(
    events: list[RuntimeEvent], forget_at: int
) -> None:
    for got, want in zip(relayed(events, forget_at), reference(events), strict=True):
        assert same(got, want)


def test_a_known_run_sends_its_closes_only_where_its_waits_are() -> None:
    memory = RelayMemory()
    assert targets(started("r", custom=False), PARTITIONS, memory) == ([], "r")
    to, key = targets(created("r", "w", "a"), PARTITIONS, memory)
    assert to == [wait_partition("acme", "paid", "a", PARTITIONS)] and key == "r:w"
    assert targets(created("r", "t", None), PARTITIONS, memory) == ([], "r:t")
    assert targets(resolved("r", "t"), PARTITIONS, memory) == ([], "r:t")
    assert targets(completed("r"), PARTITIONS, memory) == (to, "r")
    assert memory.waits == {} and memory.runs == {}


def test_what_the_relay_did_not_see_goes_everywhere() -> None:
    memory = RelayMemory()
    everywhere = list(range(PARTITIONS))
    assert targets(resolved("old", "w"), PARTITIONS, memory)[0] == everywhere
    assert targets(completed("old"), PARTITIONS, memory)[0] == everywhere
    assert targets(started("t", custom=True), PARTITIONS, memory)[0] == everywhere
    assert targets(completed("t"), PARTITIONS, memory)[0] == everywhere
    reset = ev(
        "RunReset",
        "x",
        {"execution_id": "e2", "reset_from_execution_id": "e1", "through_seq": 0, "events": []},
    )
    assert targets(reset, PARTITIONS, memory) == (everywhere, "x")


def test_only_records_naming_a_wait_or_run_lifecycle_type_are_decoded() -> None:
    assert may_matter(b'{"type":"WaitCreated","data":{}}')
    assert may_matter(b'{"data":{}, "type": "RunCompleted"}')
    assert not may_matter(b'{"type":"StepCompleted","data":{"output":"Wait"}}')
