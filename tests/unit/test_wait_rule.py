"""Which events a wait may take: the one rule (workflows.wait_rule), its properties, and
the router and the workflow applying it alike; a parked wait's bounded buffer and its
continue-as-new, under an in-memory host that delivers events as time goes by."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors.router_index import EarlyEvents, HeldEvent, RouterIndex, eligible
from schemas.runtime import RUNTIME_EVENT_ADAPTER
from tests.unit.test_interpreter import MemoryHost, run_input
from workflows.interpreter import Interpreter
from workflows.messages import DeliveredEvent, RunInput, RunOptions, RunResult
from workflows.wait_rule import may_take, received_time

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(seconds=2)

times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
skews = st.timedeltas(min_value=timedelta(0), max_value=timedelta(minutes=5))


# -- the rule -------------------------------------------------------------------------


@given(received=times, start=times, skew=skews)
def test_an_event_is_takeable_exactly_from_the_point_less_the_skew(
    received: datetime, start: datetime, skew: timedelta
) -> None:
    assert may_take(received, start, skew) == (received + skew >= start)


@given(received=times, later=skews, start=times, skew=skews)
def test_a_later_event_is_never_refused_where_an_earlier_one_is_taken(
    received: datetime, later: timedelta, start: datetime, skew: timedelta
) -> None:
    if may_take(received, start, skew):
        assert may_take(received + later, start, skew)


@given(received=times, start=times, earlier=skews, skew=skews, more=skews)
def test_an_earlier_point_or_a_larger_skew_never_refuses_more(
    received: datetime, start: datetime, earlier: timedelta, skew: timedelta, more: timedelta
) -> None:
    if may_take(received, start, skew):
        assert may_take(received, start - earlier, skew)
        assert may_take(received, start, skew + more)


@given(start=times, skew=skews)
def test_an_event_without_a_receipt_time_is_never_refused_by_time(
    start: datetime, skew: timedelta
) -> None:
    assert may_take(None, start, skew)


@given(at=times)
def test_receipt_times_parse_as_written_by_the_processor(at: datetime) -> None:
    assert received_time(at.isoformat()) == at
    assert received_time(at.isoformat().replace("+00:00", "Z")) == at
    assert received_time(None) is None and received_time("not a time") is None


# -- the router applies it ------------------------------------------------------------


def wait_created(at: datetime, eligible_from: datetime | None, wait_id: str = "w1") -> Any:
    data: dict[str, Any] = {
        "wait_id": wait_id,
        "wait_type": "event",
        "step_path": "root.steps[0]",
        "event_type": "paid",
        "correlation_key": "k",
    }
    if eligible_from is not None:
        data["eligible_from"] = eligible_from.isoformat()
    return RUNTIME_EVENT_ADAPTER.validate_python(
        {
            "event_id": str(uuid.uuid4()),
            "run_id": "r1",
            "tenant": "acme",
            "seq": 2,
            "occurred_at": at.isoformat(),
            "type": "WaitCreated",
            "data": data,
        }
    )


def held(event_id: str, at: datetime) -> HeldEvent:
    return HeldEvent("acme", "paid", "k", event_id, at, at + timedelta(minutes=10), 0, 0)


@given(created=times, point=times, received=times, skew=skews)
def test_the_router_judges_held_events_by_the_waits_point(
    created: datetime, point: datetime, received: datetime, skew: timedelta
) -> None:
    wait = RouterIndex().apply(wait_created(created, point))
    assert wait is not None
    assert eligible(wait, received, skew) == may_take(received, point, skew)


def test_a_wait_created_long_after_its_runs_start_takes_the_event_held_meanwhile() -> None:
    """The worker was down: the run was started at T0, the event came at T0+10s, the
    wait was created only at T0+5min. The wait's point is the start request."""
    index, early = RouterIndex(), EarlyEvents(SKEW)
    early.hold(held("before", T0 - timedelta(seconds=30)))
    early.hold(held("meanwhile", T0 + timedelta(seconds=10)))
    wait = index.apply(wait_created(T0 + timedelta(minutes=5), T0))
    assert wait is not None
    assert [h.event_id for h in early.take_for(wait)] == ["meanwhile"]


def test_a_wait_event_written_before_the_point_existed_uses_its_own_time() -> None:
    wait = RouterIndex().apply(wait_created(T0, None))
    assert wait is not None and wait.eligible_from == T0
    assert eligible(wait, T0 - SKEW, SKEW) and not eligible(wait, T0 - 2 * SKEW, SKEW)


# -- the workflow applies it ----------------------------------------------------------


class ScriptedHost(MemoryHost):
    """Events arrive at their times while the run waits: `wait_until` moves the clock
    to the next one and delivers it, until the condition holds or the timeout ends."""

    def __init__(self, script: list[tuple[datetime, DeliveredEvent]]) -> None:
        super().__init__()
        self.started = T0
        self.clock = T0
        self.script = list(script)
        self.interpreter: Interpreter | None = None
        self.timeouts: list[float | None] = []

    async def wait_until(self, ready: Callable[[], bool], timeout_s: float | None) -> bool:
        self.timeouts.append(timeout_s)
        assert self.interpreter is not None
        end = None if timeout_s is None else self.clock + timedelta(seconds=timeout_s)
        while not ready():
            if not self.script or (end is not None and self.script[0][0] > end):
                if end is not None:
                    self.clock = end
                return False
            at, event = self.script.pop(0)
            self.clock = max(self.clock, at)
            self.interpreter.deliver(event)
        return True


def routed(event_id: str, at: datetime, payload: dict[str, Any] | None = None) -> DeliveredEvent:
    return DeliveredEvent(
        event_id=event_id,
        event_type="doc.changed",
        correlation_key="D1",
        payload=payload or {},
        received_at=at.isoformat(),
    )


def wait_step(
    step_id: str, filters: list[dict[str, Any]] | None = None, timeout_ms: int | None = None
) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": step_id,
        "type": "event.wait",
        "event_type": "doc.changed",
        "correlation_key": "D1",
        "filters": filters or [],
        "assign": {f"vars.{step_id}": {"$expr": "event.event_id"}},
    }
    if timeout_ms is not None:
        step["timeout_ms"] = timeout_ms
    return step


async def run_through(run: RunInput, host: ScriptedHost) -> tuple[RunResult, int]:
    """Every execution of the run, continue-as-new included, as the workflow does."""
    executions = 0
    while True:
        executions += 1
        interpreter = Interpreter(run, host)
        host.interpreter = interpreter
        result = await interpreter.execute()
        if result.status != "CONTINUE_AS_NEW":
            return result, executions
        assert result.carry is not None
        run = run.model_copy(update={"carry": interpreter.carry_signals(result.carry)})


def logs(host: MemoryHost, reason: str) -> list[str]:
    return [
        e["event_id"]
        for log in host.emitted
        if log["type"] == "RunLog" and log["data"]["details"].get("reason") == reason
        for e in log["data"]["details"]["events"]
    ]


async def test_a_draft_received_before_the_approval_never_wakes_the_next_wait() -> None:
    approved = [{"path": "state", "op": "=", "value": "approved"}]
    steps = [wait_step("first", approved), wait_step("second")]
    host = ScriptedHost(
        [
            (
                T0 + timedelta(seconds=10),
                routed("draft", T0 + timedelta(seconds=10), {"state": "draft"}),
            ),
            (
                T0 + timedelta(seconds=20),
                routed("ok", T0 + timedelta(seconds=20), {"state": "approved"}),
            ),
            (T0 + timedelta(seconds=60), routed("next", T0 + timedelta(seconds=60))),
        ]
    )
    result, _ = await run_through(run_input(steps), host)
    assert result.status == "SUCCEEDED"
    resolved = [e["data"]["matched_event_id"] for e in host.emitted if e["type"] == "WaitResolved"]
    assert resolved == ["ok", "next"]
    assert logs(host, "not_taken") + logs(host, "before_wait") == ["draft"]
    points = [
        received_time(e["data"]["eligible_from"])
        for e in host.emitted
        if e["type"] == "WaitCreated"
    ]
    assert points == [T0, T0 + timedelta(seconds=20)]


async def test_a_draft_still_buffered_when_the_next_wait_opens_is_dropped_with_a_log() -> None:
    """The draft came within the skew of the approval, so the first wait kept it; the
    second wait opens after a pause, at a point the draft is well before."""
    approved = [{"path": "state", "op": "=", "value": "approved"}]
    steps = [
        wait_step("first", approved),
        {"id": "pause", "type": "time.wait", "duration_ms": 30_000},
        wait_step("second", timeout_ms=1000),
    ]
    at = T0 + timedelta(seconds=10)
    host = ScriptedHost(
        [
            (at, routed("draft", at - timedelta(seconds=1), {"state": "draft"})),
            (at, routed("ok", at, {"state": "approved"})),
        ]
    )
    result, _ = await run_through(run_input(steps), host)
    assert result.status == "FAILED" and result.error is not None
    assert result.error["code"] == "WAIT_TIMED_OUT"
    assert logs(host, "before_wait") == ["draft"] and logs(host, "not_taken") == []


async def test_the_first_wait_takes_what_came_after_the_start_request() -> None:
    """The first workflow task ran five minutes after the start request (no worker):
    what Kafka received in between is the first wait's, what came before is not."""
    host = ScriptedHost([])
    host.clock = T0 + timedelta(minutes=5)
    run = run_input([wait_step("first")])
    interpreter = Interpreter(run, host)
    host.interpreter = interpreter
    interpreter.deliver(routed("old", T0 - timedelta(seconds=30)))
    interpreter.deliver(routed("meanwhile", T0 + timedelta(seconds=10)))
    result = await interpreter.execute()
    assert result.status == "SUCCEEDED"
    assert interpreter.data.vars["first"] == "meanwhile"
    assert logs(host, "before_wait") == ["old"]


async def test_the_buffer_keeps_the_newest_and_logs_the_rest() -> None:
    run = run_input([]).model_copy(update={"options": RunOptions(buffered_events_limit=5)})
    host = MemoryHost()
    interpreter = Interpreter(run, host)
    for n in range(12):
        interpreter.deliver(DeliveredEvent(event_id=f"e{n}", event_type="other"))
    assert [e.event_id for e in interpreter.signals.buffer] == [f"e{n}" for n in range(7, 12)]
    await interpreter.execute()
    assert logs(host, "buffer_full") == [f"e{n}" for n in range(7)]


async def test_a_parked_wait_continues_as_new_and_resumes_the_same_wait() -> None:
    noise = [
        (
            T0 + timedelta(seconds=n),
            DeliveredEvent(
                event_id=f"n{n}", event_type="doc.changed", correlation_key="D1", payload={"n": n}
            ),
        )
        for n in range(1, 46)
    ]
    match = [(T0 + timedelta(seconds=50), routed("hit", T0 + timedelta(seconds=50), {"go": True}))]
    steps = [
        {"id": "a", "type": "assign", "assign": {"vars.x": 1}},
        wait_step("w", [{"path": "go", "op": "=", "value": True}], timeout_ms=3_600_000),
        {"id": "r", "type": "control.return", "output": {"$expr": "vars.w"}},
    ]
    run = run_input(steps).model_copy(
        update={"options": RunOptions(continue_as_new_signals=10, buffered_events_limit=20)}
    )
    host = ScriptedHost(noise + match)
    result, executions = await run_through(run, host)
    assert result.status == "SUCCEEDED" and result.output == "hit"
    assert executions >= 4
    kinds = [e["type"] for e in host.emitted]
    assert kinds.count("WaitCreated") == 1 and kinds.count("WaitResolved") == 1
    assert kinds.count("RunContinuedAsNew") == executions - 1
    started = [e["data"]["step_path"] for e in host.emitted if e["type"] == "StepStarted"]
    assert started == ["root.steps[0]", "root.steps[1]", "root.steps[2]"]
    assert [e["seq"] for e in host.emitted] == list(range(1, len(host.emitted) + 1))
    # The buffer stayed bounded (these carry no receipt time, so only the limit applies).
    assert logs(host, "buffer_full") == [f"n{n}" for n in range(1, 27)]
    # Each execution waited only for what was left of the hour.
    lefts = [t for t in host.timeouts if t is not None]
    assert lefts[0] == 3600.0 and lefts == sorted(lefts, reverse=True) and lefts[-1] < 3600.0


async def test_a_carried_wait_times_out_at_its_original_deadline() -> None:
    noise = [
        (
            T0 + timedelta(seconds=n),
            DeliveredEvent(event_id=f"n{n}", event_type="doc.changed", correlation_key="D1"),
        )
        for n in range(1, 31)
    ]
    steps = [wait_step("w", [{"path": "go", "op": "=", "value": True}], timeout_ms=40_000)]
    run = run_input(steps).model_copy(update={"options": RunOptions(continue_as_new_signals=10)})
    host = ScriptedHost(noise)
    result, executions = await run_through(run, host)
    assert executions >= 3
    assert result.status == "FAILED" and result.error is not None
    assert result.error["code"] == "WAIT_TIMED_OUT"
    assert host.clock == T0 + timedelta(seconds=40)
    resolved = [e for e in host.emitted if e["type"] == "WaitResolved"]
    assert [e["data"]["resolution"] for e in resolved] == ["TIMED_OUT"]
