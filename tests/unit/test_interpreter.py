"""The interpreter's pure core under an in-memory host: no Temporal, no Kafka."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from workflows.errors import StepError
from workflows.interpreter import Interpreter
from workflows.messages import (
    ActionRequest,
    DefinitionReply,
    DefinitionRequest,
    DeliveredEvent,
    RunInput,
    RunOptions,
    RunResult,
)


class MemoryHost:
    def __init__(self, fail_actions: int = 0) -> None:
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)
        self.started = self.clock
        self.emitted: list[dict[str, Any]] = []
        self.calls: list[ActionRequest] = []
        self.fail_actions = fail_actions
        self.correlation_keys: list[list[str]] = []

    def now(self) -> datetime:
        return self.clock

    def start_time(self) -> datetime:
        return self.started

    async def emit(self, run_id: str, events: list[dict[str, Any]]) -> None:
        self.emitted.extend(events)

    async def call_action(self, request: ActionRequest) -> dict[str, Any]:
        self.calls.append(request)
        if len(self.calls) <= self.fail_actions:
            raise StepError("ActionError", "BOOM", "failed", request.step_path, retryable=True)
        return {"output": {"echo": request.input}}

    async def load_definition(self, request: DefinitionRequest) -> DefinitionReply:
        raise AssertionError("no child runs in these tests")

    async def run_child(self, child: RunInput) -> RunResult:
        raise AssertionError("no child runs in these tests")

    def continue_as_new_suggested(self) -> bool:
        return False

    def patched(self, change: str) -> bool:
        return True

    def set_correlation_keys(self, keys: list[str]) -> None:
        self.correlation_keys.append(keys)

    async def sleep(self, seconds: float) -> None:
        self.clock += timedelta(seconds=seconds)

    async def wait_until(self, ready: Callable[[], bool], timeout_s: float | None) -> bool:
        # Nothing arrives while a run waits in memory: what is buffered is all there is.
        return ready()


def run_input(steps: list[dict[str, Any]], data: dict[str, Any] | None = None) -> RunInput:
    return RunInput(
        run_id="r1",
        tenant="acme",
        definition_id="d",
        version=1,
        definition_hash="0" * 64,
        definition={"steps": steps},
        input=data or {},
    )


async def test_seq_is_contiguous_and_ids_deterministic() -> None:
    host = MemoryHost()
    steps = [{"id": "a", "type": "assign", "assign": {"vars.x": 1}}]
    result = await Interpreter(run_input(steps), host).execute()
    again = MemoryHost()
    await Interpreter(run_input(steps), again).execute()
    assert result.status == "SUCCEEDED"
    assert [e["seq"] for e in host.emitted] == [1, 2, 3, 4]
    assert host.emitted == again.emitted


async def test_retry_backoff_uses_the_workflow_clock() -> None:
    host = MemoryHost(fail_actions=2)
    steps = [
        {
            "id": "c",
            "type": "action.call",
            "action": "core.noop",
            "version": 1,
            "input": {"value": 1},
            "save_as": "vars.out",
            "retry": {"max_attempts": 3, "backoff_ms": 1000, "backoff_multiplier": 3},
        }
    ]
    interpreter = Interpreter(run_input(steps), host)
    result = await interpreter.execute()
    assert result.status == "SUCCEEDED"
    assert [c.attempt for c in host.calls] == [1, 2, 3]
    assert host.clock == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=4)
    assert interpreter.data.vars["out"] == {"echo": {"value": 1}}


async def test_duplicate_delivery_is_dropped_and_bounded() -> None:
    run = run_input([]).model_copy(update={"options": RunOptions(delivered_ids_limit=10)})
    interpreter = Interpreter(run, MemoryHost())
    event = DeliveredEvent(event_id="e", event_type="t", correlation_key="k")
    assert interpreter.deliver(event) is True
    assert interpreter.deliver(event) is False
    for i in range(20):
        interpreter.deliver(DeliveredEvent(event_id=f"x{i}", event_type="t"))
    assert len(interpreter.signals.delivered) == 10


async def test_buffered_event_resumes_a_later_wait() -> None:
    host = MemoryHost()
    steps = [
        {
            "id": "w",
            "type": "event.wait",
            "event_type": "t",
            "correlation_key": 42,
            "assign": {"vars.p": {"$expr": "event.payload.v"}},
        }
    ]
    interpreter = Interpreter(run_input(steps), host)
    interpreter.deliver(
        DeliveredEvent(event_id="e", event_type="t", correlation_key="42", payload={"v": "early"})
    )
    result = await interpreter.execute()
    assert result.status == "SUCCEEDED"
    assert interpreter.data.vars["p"] == "early"
    created = next(e for e in host.emitted if e["type"] == "WaitCreated")
    assert created["data"]["correlation_key"] == "42"


async def test_assign_refuses_proto_targets() -> None:
    steps = [{"id": "a", "type": "assign", "assign": {"vars.__proto__.x": 1}}]
    result = await Interpreter(run_input(steps), MemoryHost()).execute()
    assert result.status == "FAILED"
    assert result.error is not None and result.error["code"] == "ASSIGN_TARGET_INVALID"


async def test_nested_return_unwinds() -> None:
    steps = [
        {
            "id": "loop",
            "type": "control.forEach",
            "items": [1, 2, 3],
            "item_var": "i",
            "body": [{"id": "r", "type": "control.return", "output": {"$expr": "local.i * 10"}}],
        },
        {"id": "never", "type": "assign", "assign": {"vars.x": 1}},
    ]
    host = MemoryHost()
    result = await Interpreter(run_input(steps), host).execute()
    assert result.output == 10
    assert not any(e["data"].get("step_id") == "never" for e in host.emitted)


def nested_definition() -> list[dict[str, Any]]:
    body = [
        {
            "id": "chk",
            "type": "control.if",
            "condition": {"$expr": "local.i % 2 = 0"},
            "then": [
                {
                    "id": "even",
                    "type": "assign",
                    "assign": {"vars.even": {"$expr": "append(coalesce(vars.even, []), local.i)"}},
                }
            ],
            "else": [
                {
                    "id": "t",
                    "type": "control.tryCatch",
                    "capture_error_as": "err",
                    "try": [
                        {
                            "id": "boom",
                            "type": "assign",
                            "assign": {"vars.x": {"$expr": "local.i > 5 ? $nope() : local.i"}},
                        }
                    ],
                    "catch": [
                        {
                            "id": "c1",
                            "type": "assign",
                            "assign": {"vars.caught": {"$expr": "coalesce(vars.caught, 0) + 1"}},
                        },
                        {
                            "id": "c2",
                            "type": "assign",
                            "assign": {"local.note": {"$expr": "'c' & toString(local.i)"}},
                        },
                    ],
                }
            ],
        },
        {
            "id": "inner",
            "type": "control.forEach",
            "items": {"$expr": "[1, 2]"},
            "item_var": "j",
            "body": [
                {
                    "id": "sum",
                    "type": "assign",
                    "assign": {"vars.sum": {"$expr": "coalesce(vars.sum, 0) + local.i * local.j"}},
                }
            ],
        },
    ]
    return [
        {
            "id": "loop",
            "type": "control.forEach",
            "items": {"$expr": "[0..9]"},
            "item_var": "i",
            "body": body,
        },
        {
            "id": "w",
            "type": "event.wait",
            "event_type": "go",
            "correlation_key": "k",
            "assign": {"vars.got": {"$expr": "event.payload.n"}},
        },
        {
            "id": "ret",
            "type": "control.return",
            "output": {
                "$expr": "{'even': vars.even, 'sum': vars.sum, 'caught': vars.caught, "
                "'got': vars.got}"
            },
        },
    ]


async def run_with_switches(every: int) -> tuple[Any, list[dict[str, Any]], int]:
    host = MemoryHost()
    run = run_input(nested_definition()).model_copy(
        update={"options": RunOptions(continue_as_new_steps=every)}
    )
    executions = 0
    event = DeliveredEvent(event_id="e1", event_type="go", correlation_key="k", payload={"n": 7})
    while True:
        executions += 1
        interpreter = Interpreter(run, host)
        # Delivered during every execution (a duplicate after the first): seen once.
        interpreter.deliver(event)
        result = await interpreter.execute()
        if result.status != "CONTINUE_AS_NEW":
            return result, host.emitted, executions
        assert result.carry is not None
        run = run.model_copy(update={"carry": interpreter.carry_signals(result.carry)})


async def test_continue_as_new_resumes_exactly_where_it_stopped() -> None:
    # $nope is not allowed: every odd i > 5 fails inside try and is caught.
    straight, straight_events, one = await run_with_switches(10_000)
    switched, events, executions = await run_with_switches(10)
    assert one == 1 and executions > 5
    assert switched.status == "SUCCEEDED"
    assert switched.output == straight.output
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["event_id"] for e in events}) == len(events)
    strip = [e for e in events if e["type"] != "RunContinuedAsNew"]
    assert [(e["type"], e["data"].get("step_path")) for e in strip] == [
        (e["type"], e["data"].get("step_path")) for e in straight_events
    ]
    assert len([e for e in events if e["type"] == "WaitResolved"]) == 1


async def test_many_signals_switch_to_a_new_execution_before_temporal_limits() -> None:
    steps = [{"id": f"a{i}", "type": "assign", "assign": {"vars.n": i}} for i in range(5)]
    run = run_input(steps).model_copy(update={"options": RunOptions(continue_as_new_signals=3)})
    interpreter = Interpreter(run, MemoryHost())
    for i in range(4):
        interpreter.deliver(DeliveredEvent(event_id=f"e{i}", event_type="t"))
    result = await interpreter.execute()
    assert result.status == "CONTINUE_AS_NEW"
    assert result.carry is not None
    assert [e.event_id for e in result.carry.buffered] == ["e0", "e1", "e2", "e3"]
    assert result.carry.cursor == [{"index": 0}]


async def test_a_refused_completion_fails_the_step_with_a_catchable_validation_error() -> None:
    """A response that breaks the form schema (one that bypassed the CLI) fails the
    task's step; a tryCatch sees HUMAN_TASK_RESPONSE_INVALID, the task is REFUSED
    and its wait closed."""
    from workflows.messages import TaskCompletion
    from workflows.steps_effects import task_id_for

    ask = {
        "id": "ask",
        "type": "human.task",
        "task_type": "t",
        "title": "T",
        "form_schema": {
            "type": "object",
            "properties": {"decision": {"type": "string"}},
            "required": ["decision"],
        },
        "assign": {"vars.d": {"$expr": "task.response.decision"}},
    }
    steps = [
        {
            "id": "guard",
            "type": "control.tryCatch",
            "capture_error_as": "err",
            "try": [ask],
            "catch": [{"id": "c", "type": "assign", "assign": {"vars.d": "refused"}}],
        },
        {
            "id": "r",
            "type": "control.return",
            "output": {"$expr": "{'d': vars.d, 'err': vars.err}"},
        },
    ]
    host = MemoryHost()
    interpreter = Interpreter(run_input(steps), host)
    task_id = task_id_for("r1", "root.steps[0].try.steps[0]", "")
    interpreter.complete_task(
        TaskCompletion(task_id=task_id, response={"decision": 5}, completed_by="x")
    )
    result = await interpreter.execute()
    assert result.status == "SUCCEEDED"
    assert result.output["d"] == "refused"
    err = result.output["err"]
    assert err["category"] == "ValidationError"
    assert err["code"] == "HUMAN_TASK_RESPONSE_INVALID"
    assert err["step_path"] == "root.steps[0].try.steps[0]"
    assert err["details"]["task_id"] == task_id and err["details"]["problems"]
    done = [e for e in host.emitted if e["type"] == "HumanTaskCompleted"]
    assert [e["data"]["status"] for e in done] == ["REFUSED"]
    resolved = [e["data"] for e in host.emitted if e["type"] == "WaitResolved"]
    assert [w["resolution"] for w in resolved] == ["CANCELED"]
    assert not interpreter.open_tasks and not interpreter.open_waits


async def test_run_started_records_the_semantics_version_and_the_carry_keeps_it() -> None:
    from workflows.messages import Carry
    from workflows.semantics import SEMANTICS_VERSION

    steps = [{"id": "a", "type": "assign", "assign": {"vars.x": 1}}]
    host = MemoryHost()
    await Interpreter(run_input(steps), host).execute()
    started = [e for e in host.emitted if e["type"] == "RunStarted"]
    assert started[0]["data"]["semantics_version"] == SEMANTICS_VERSION
    pinned = run_input(steps).model_copy(update={"carry": Carry(semantics_version=7)})
    assert Interpreter(pinned, MemoryHost()).semantics_version == 7


async def test_an_authored_idempotency_key_goes_to_the_ledger_and_a_cached_answer_shows() -> None:
    class CachedHost(MemoryHost):
        async def call_action(self, request: ActionRequest) -> dict[str, Any]:
            self.calls.append(request)
            return {"output": {"n": 1}, "cached": request.ledger}

    steps = [
        {"id": "a", "type": "action.call", "action": "core.noop", "version": 1},
        {
            "id": "b",
            "type": "action.call",
            "action": "core.noop",
            "version": 1,
            "idempotency_key": {"$expr": "'order-' & toString(payload.n)"},
        },
    ]
    host = CachedHost()
    result = await Interpreter(run_input(steps, {"n": 42}), host).execute()
    assert result.status == "SUCCEEDED"
    assert [(c.ledger, c.idempotency_key) for c in host.calls][1] == (True, "order-42")
    assert host.calls[0].ledger is False
    invocations = [e["data"] for e in host.emitted if e["type"] == "ActionInvocation"]
    assert [i["cached"] for i in invocations] == [False, True]
    assert invocations[1]["idempotency_key"] == "order-42"


async def test_an_idempotency_key_that_names_nothing_is_a_validation_error() -> None:
    for key in (None, "", {"$expr": "payload.missing"}, {"$expr": "[1, 2]"}):
        steps = [
            {
                "id": "a",
                "type": "action.call",
                "action": "core.noop",
                "version": 1,
                "idempotency_key": key if key is not None else {"$expr": "null"},
            }
        ]
        host = MemoryHost()
        result = await Interpreter(run_input(steps), host).execute()
        assert result.status == "FAILED", key
        assert result.error is not None
        assert result.error["code"] == "ACTION_IDEMPOTENCY_KEY_INVALID", key
        assert result.error["category"] == "ValidationError"
        assert host.calls == []


def _two_waits(flag: bool) -> RunInput:
    steps = [
        {"id": "w1", "type": "event.wait", "event_type": "t", "correlation_key": "k1"},
        {"id": "w2", "type": "event.wait", "event_type": "t", "correlation_key": "k2"},
    ]
    return run_input(steps).model_copy(update={"options": RunOptions(search_attributes=flag)})


def _events() -> list[DeliveredEvent]:
    return [
        DeliveredEvent(event_id=f"e{k}", event_type="t", correlation_key=k) for k in ("k1", "k2")
    ]


async def test_correlation_keys_follow_the_open_waits() -> None:
    host = MemoryHost()
    interpreter = Interpreter(_two_waits(True), host)
    for event in _events():
        interpreter.deliver(event)
    assert (await interpreter.execute()).status == "SUCCEEDED"
    assert host.correlation_keys == [["k1"], [], ["k2"], []]


async def test_correlation_keys_are_not_upserted_without_the_attributes() -> None:
    host = MemoryHost()
    interpreter = Interpreter(_two_waits(False), host)
    for event in _events():
        interpreter.deliver(event)
    assert (await interpreter.execute()).status == "SUCCEEDED"
    assert host.correlation_keys == []


async def test_correlation_keys_wait_for_the_patch() -> None:
    class Unpatched(MemoryHost):
        def patched(self, change: str) -> bool:
            return change != "flowledger.visibility.correlation-keys"

    host = Unpatched()
    interpreter = Interpreter(_two_waits(True), host)
    for event in _events():
        interpreter.deliver(event)
    assert (await interpreter.execute()).status == "SUCCEEDED"
    assert host.correlation_keys == []


class BatchCountingHost(MemoryHost):
    def __init__(self, batched: bool) -> None:
        super().__init__()
        self.batched = batched
        self.batches: list[int] = []

    async def emit(self, run_id: str, events: list[dict[str, Any]]) -> None:
        self.batches.append(len(events))
        await super().emit(run_id, events)

    def patched(self, change: str) -> bool:
        return self.batched or change != "flowledger.emit.batched-pure-steps"


def _assigns(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"s{i}",
            "type": "assign",
            "assign": {"vars.n": {"$expr": "coalesce(vars.n, 0) + 1"}},
        }
        for i in range(count)
    ]


async def test_pure_steps_emit_once_per_execution_with_the_patch() -> None:
    # 150 steps: RunStarted, 300 step events, RunCompleted.
    batched = BatchCountingHost(batched=True)
    result = await Interpreter(run_input(_assigns(150)), batched).execute()
    assert result.status == "SUCCEEDED"
    assert batched.batches == [302]
    # A history recorded before the patch replays its emission every 200 events.
    before = BatchCountingHost(batched=False)
    await Interpreter(run_input(_assigns(150)), before).execute()
    assert before.batches == [201, 101]
    # The same records either way, only travelling in fewer batches.
    assert batched.emitted == before.emitted


async def test_parsed_steps_are_shared_only_for_equal_definitions() -> None:
    # run_input gives every definition the same hash: the raw steps decide.
    first = MemoryHost()
    await Interpreter(
        run_input([{"id": "a", "type": "assign", "assign": {"vars.x": 1}}]), first
    ).execute()
    second = Interpreter(
        run_input([{"id": "b", "type": "assign", "assign": {"vars.y": 2}}]), MemoryHost()
    )
    await second.execute()
    assert second.data.vars == {"y": 2}


class BesideHost(MemoryHost):
    """Records when each emission finished relative to the actions."""

    def __init__(self, beside: bool) -> None:
        super().__init__()
        self.beside = beside
        self.order: list[str] = []

    async def emit(self, run_id: str, events: list[dict[str, Any]]) -> None:
        self.order.append(f"emit {len(events)}")
        await super().emit(run_id, events)

    async def call_action(self, request: ActionRequest) -> dict[str, Any]:
        self.order.append("action")
        return await super().call_action(request)

    def patched(self, change: str) -> bool:
        return self.beside or change != "flowledger.action.emit-beside-action"


async def test_events_before_an_action_go_out_beside_it_with_the_patch() -> None:
    steps = [
        {"id": "a", "type": "assign", "assign": {"vars.x": 1}},
        {"id": "c", "type": "action.call", "action": "core.noop", "version": 1, "input": {}},
        {"id": "d", "type": "action.call", "action": "core.noop", "version": 1, "input": {}},
    ]
    beside = BesideHost(beside=True)
    await Interpreter(run_input(steps), beside).execute()
    before = BesideHost(beside=False)
    await Interpreter(run_input(steps), before).execute()
    # The same records in the same order; each batch still waits for the one before.
    assert beside.emitted == before.emitted
    assert [e["seq"] for e in beside.emitted] == list(range(1, len(beside.emitted) + 1))
    assert before.order == ["emit 4", "action", "emit 3", "action", "emit 3"]
    # Each emission starts with the action after it, and is done before the next one.
    assert beside.order == ["action", "emit 4", "action", "emit 3", "emit 3"]
