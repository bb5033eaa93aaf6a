"""The interpreter on a real Temporal dev server, its events read back from Kafka:
one test per step type and per error rule."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import WorkflowFailureError

from flowledger.settings import Settings
from tests.integration.runtime_support import (
    completed,
    definition,
    of_type,
    start,
    types,
    wait_for_events,
    worker,
)
from workflows.messages import DeliveredEvent


async def run_once(
    settings: Settings, steps: list[dict[str, Any]], data: dict[str, Any] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    async with worker(settings) as client:
        run_id, handle = await start(settings, client, definition(steps), data)
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
    return run_id, await wait_for_events(settings, run_id)


def assign(target: str, expr: Any, sid: str = "a") -> dict[str, Any]:
    return {"id": sid, "type": "assign", "assign": {target: {"$expr": expr}}}


def ret(expr: str) -> dict[str, Any]:
    return {"id": "ret", "type": "control.return", "output": {"$expr": expr}}


UNREACHABLE = "http://127.0.0.1:9/never"


async def test_assign_and_return(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            assign("vars.total", "payload.a + payload.b"),
            {"id": "lit", "type": "assign", "assign": {"vars.meta.kind": "literal"}},
            ret("{'total': vars.total, 'kind': vars.meta.kind, 'run': system.run_id != null}"),
        ],
        {"a": 2, "b": 3},
    )
    assert completed(events) == {
        "status": "SUCCEEDED",
        "output": {"total": 5, "kind": "literal", "run": True},
        "error": None,
    }
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "RunStarted"
    assert events[0]["data"]["input"] == {"a": 2, "b": 3}


async def test_action_call_log_and_noop(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "log",
                "type": "action.call",
                "action": "core.log",
                "version": 1,
                "input": {"message": {"$expr": "'hello ' & payload.who"}},
            },
            {
                "id": "noop",
                "type": "action.call",
                "action": "core.noop",
                "version": 1,
                "input": {"value": {"$expr": "payload.who"}},
                "save_as": "vars.echo",
            },
            ret("vars.echo.value"),
        ],
        {"who": "ada"},
    )
    assert of_type(events, "RunLog")[0]["data"]["message"] == "hello ada"
    invocations = of_type(events, "ActionInvocation")
    assert [i["data"]["action"] for i in invocations] == ["core.log", "core.noop"]
    assert all(i["data"]["status"] == "SUCCEEDED" for i in invocations)
    assert completed(events)["output"] == "ada"


async def test_if_inside_for_each_inside_try_catch(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "guard",
                "type": "control.tryCatch",
                "capture_error_as": "err",
                "try": [
                    {
                        "id": "loop",
                        "type": "control.forEach",
                        "items": {"$expr": "payload.items"},
                        "item_var": "n",
                        "body": [
                            {
                                "id": "check",
                                "type": "control.if",
                                "condition": {"$expr": "local.n > 2"},
                                "then": [
                                    assign(
                                        "vars.big", "append(coalesce(vars.big, []), local.n)", "big"
                                    )
                                ],
                                "else": [assign("vars.last_small_index", "local.index", "small")],
                            }
                        ],
                    },
                    assign("vars.boom", "$notallowed()", "never"),
                ],
                "catch": [assign("vars.caught", "vars.err.code", "caught")],
            },
            ret("{'big': vars.big, 'small': vars.last_small_index, 'caught': vars.caught}"),
        ],
        {"items": [1, 2, 3, 4]},
    )
    # The disallowed call fails at evaluation inside the try; catch sees its code.
    assert completed(events)["output"] == {
        "big": [3, 4],
        "small": 1,
        "caught": "EXPR_DISALLOWED_FUNCTION",
    }
    paths = {e["data"]["step_path"] for e in of_type(events, "StepStarted")}
    assert "root.steps[0].try.steps[0].body.steps[0].then.steps[0]" in paths


async def test_for_each_locals(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "loop",
                "type": "control.forEach",
                "items": ["a", "b", "c"],
                "item_var": "x",
                "body": [
                    assign(
                        "vars.seen",
                        "append(coalesce(vars.seen, []), "
                        "{'x': local.x, 'i': local.index, 'n': local.length, "
                        "'first': local.is_first, 'last': local.is_last})",
                        "rec",
                    )
                ],
            },
            ret("vars.seen"),
        ],
    )
    output = completed(events)["output"]
    assert [o["x"] for o in output] == ["a", "b", "c"]
    assert output[0]["first"] and output[2]["last"] and output[1]["n"] == 3


async def test_for_each_items_must_be_array(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "loop",
                "type": "control.forEach",
                "items": {"$expr": "payload.x"},
                "item_var": "x",
                "body": [],
            },
        ],
        {"x": "nope"},
    )
    done = completed(events)
    assert done["status"] == "FAILED"
    assert done["error"]["code"] == "ITEMS_NOT_ARRAY"
    assert done["error"]["step_path"] == "root.steps[0]"


async def test_condition_must_be_boolean(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "c",
                "type": "control.if",
                "condition": {"$expr": "'yes'"},
                "then": [],
                "else": [],
            },
        ],
    )
    assert completed(events)["error"]["code"] == "CONDITION_NOT_BOOLEAN"


async def test_retry_then_on_error_continue(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "call",
                "type": "action.call",
                "action": "core.http_request",
                "version": 1,
                "input": {"url": UNREACHABLE, "timeout_s": 1},
                "retry": {"max_attempts": 3, "backoff_ms": 20, "backoff_multiplier": 2},
                "on_error": "continue",
            },
            ret("'went on'"),
        ],
    )
    attempts = of_type(events, "ActionInvocation")
    assert [a["data"]["attempt"] for a in attempts] == [1, 2, 3]
    assert {a["data"]["status"] for a in attempts} == {"FAILED"}
    assert attempts[0]["data"]["error"]["category"] == "ActionError"
    step = next(e for e in of_type(events, "StepCompleted") if e["data"]["step_id"] == "call")
    assert step["data"]["status"] == "FAILED"
    assert completed(events)["output"] == "went on"


async def test_action_error_category_seen_by_retry_on_and_catch(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "guard",
                "type": "control.tryCatch",
                "capture_error_as": "err",
                "try": [
                    {
                        "id": "call",
                        "type": "action.call",
                        "action": "core.http_request",
                        "version": 1,
                        "input": {"url": UNREACHABLE, "timeout_s": 1},
                        # ActionError is not in retry_on: one attempt only.
                        "retry": {
                            "max_attempts": 4,
                            "backoff_ms": 10,
                            "retry_on": ["TimeoutError"],
                        },
                    }
                ],
                "catch": [assign("vars.cat", "vars.err.category & '/' & vars.err.code", "c")],
            },
            {
                "id": "host",
                "type": "control.tryCatch",
                "capture_error_as": "err2",
                "try": [
                    {
                        "id": "call2",
                        "type": "action.call",
                        "action": "core.http_request",
                        "version": 1,
                        "input": {"url": "http://example.invalid/"},
                        "retry": {"max_attempts": 4, "backoff_ms": 10},
                    }
                ],
                "catch": [assign("vars.host", "vars.err2.code", "h")],
            },
            ret("{'cat': vars.cat, 'host': vars.host, 'path': vars.err.step_path}"),
        ],
    )
    output = completed(events)["output"]
    assert output["cat"] == "ActionError/HTTP_REQUEST_FAILED"
    assert output["host"] == "HTTP_HOST_NOT_ALLOWED"
    assert output["path"] == "root.steps[0].try.steps[0]"
    per_step: dict[str, int] = {}
    for a in of_type(events, "ActionInvocation"):
        per_step[a["data"]["step_path"]] = per_step.get(a["data"]["step_path"], 0) + 1
    # Neither error was retried: not in retry_on, and not retryable, respectively.
    assert set(per_step.values()) == {1}


async def test_uncaught_action_error_fails_the_run(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "call",
                "type": "action.call",
                "action": "core.http_request",
                "version": 1,
                "input": {"url": "http://example.invalid/"},
            },
        ],
    )
    done = completed(events)
    assert done["status"] == "FAILED"
    assert done["error"]["category"] == "ActionError"
    assert done["error"]["code"] == "HTTP_HOST_NOT_ALLOWED"


async def test_time_wait_duration_and_until_already_due(settings: Settings) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    _, events = await run_once(
        settings,
        [
            {"id": "due", "type": "time.wait", "until": past},
            {
                "id": "nap",
                "type": "time.wait",
                "duration_ms": 300,
                "assign": {"vars.woke": {"$expr": "nowIso()"}},
            },
            ret("vars.woke != null"),
        ],
    )
    waits = of_type(events, "WaitCreated")
    # Already due: no wait at all; the duration: one time wait, resolved.
    assert [w["data"]["wait_type"] for w in waits] == ["time"]
    assert of_type(events, "WaitResolved")[0]["data"]["resolution"] == "RESOLVED"
    assert completed(events)["output"] is True


async def test_event_wait_timeout_caught(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "guard",
                "type": "control.tryCatch",
                "capture_error_as": "err",
                "try": [
                    {
                        "id": "w",
                        "type": "event.wait",
                        "event_type": "never.happens",
                        "correlation_key": "k",
                        "timeout_ms": 300,
                    }
                ],
                "catch": [assign("vars.why", "vars.err.category & '/' & vars.err.code", "c")],
            },
            ret("vars.why"),
        ],
    )
    assert of_type(events, "WaitResolved")[0]["data"]["resolution"] == "TIMED_OUT"
    assert completed(events)["output"] == "TimeoutError/WAIT_TIMED_OUT"


async def test_event_wait_filters_and_duplicates(settings: Settings) -> None:
    steps = [
        {
            "id": "w1",
            "type": "event.wait",
            "event_type": "ticket.updated",
            "correlation_key": {"$expr": "payload.ticket"},
            "filters": [
                {"path": "status", "op": "=", "value": "closed"},
                {"path": "score", "op": ">=", "value": 3},
            ],
            "assign": {"vars.first": {"$expr": "event.event_id"}},
        },
        {
            "id": "w2",
            "type": "event.wait",
            "event_type": "ticket.updated",
            "correlation_key": {"$expr": "payload.ticket"},
            "assign": {"vars.second": {"$expr": "event.event_id"}},
        },
        ret("{'first': vars.first, 'second': vars.second}"),
    ]
    async with worker(settings) as client:
        run_id, handle = await start(settings, client, definition(steps), {"ticket": "T-1"})

        def ev(event_id: str, key: str, **payload: Any) -> DeliveredEvent:
            return DeliveredEvent(
                event_id=event_id, event_type="ticket.updated", correlation_key=key, payload=payload
            )

        await handle.signal("deliver_event", ev("e-other", "T-2", status="closed", score=5))
        await handle.signal("deliver_event", ev("e-open", "T-1", status="open", score=5))
        await handle.signal("deliver_event", ev("e-low", "T-1", status="closed", score="5"))
        await handle.signal("deliver_event", ev("e-good", "T-1", status="closed", score=3))
        await handle.signal("deliver_event", ev("e-good", "T-1", status="closed", score=3))
        result = await handle.result()
    # w1 takes the first event passing both filters; w2 takes the first buffered
    # event left (e-open), and the duplicate of e-good was dropped.
    assert result["output"] == {"first": "e-good", "second": "e-open"}
    events = await wait_for_events(settings, run_id)
    resolved = of_type(events, "WaitResolved")
    assert [r["data"]["matched_event_id"] for r in resolved] == ["e-good", "e-open"]


async def test_wait_key_null_is_an_error(settings: Settings) -> None:
    _, events = await run_once(
        settings,
        [
            {
                "id": "w",
                "type": "event.wait",
                "event_type": "x",
                "correlation_key": {"$expr": "payload.missing"},
            },
        ],
    )
    assert completed(events)["error"]["code"] == "WAIT_CORRELATION_KEY_INVALID"


async def test_http_request_to_allowed_host(settings: Settings) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            self.send_response(201)
            self.send_header("content-type", "application/json")
            self.end_headers()
            key = self.headers.get("Idempotency-Key", "")
            self.wfile.write(b'{"got": ' + body + b', "key": "' + key.encode() + b'"}')

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        _, events = await run_once(
            settings,
            [
                {
                    "id": "call",
                    "type": "action.call",
                    "action": "core.http_request",
                    "version": 1,
                    "input": {"method": "POST", "url": url, "json": {"n": 1}},
                    "save_as": "vars.reply",
                },
                ret(
                    "{'status': vars.reply.status, 'got': vars.reply.json.got, "
                    "'keyed': len(vars.reply.json.key) > 0}"
                ),
            ],
        )
    finally:
        server.shutdown()
    assert completed(events)["output"] == {"status": 201, "got": {"n": 1}, "keyed": True}


async def test_emit_event_publishes_to_ingress(settings: Settings) -> None:
    from topics.catalogue import EVENTS
    from topics.reader import read_all

    _run_id, events = await run_once(
        settings,
        [
            {
                "id": "emit",
                "type": "action.call",
                "action": "core.emit_event",
                "version": 1,
                "input": {"event_type": "order.shipped", "payload": {"id": 7}},
                "save_as": "vars.e",
            },
            ret("vars.e.event_id"),
        ],
    )
    event_id = completed(events)["output"]
    landed = [r for r in read_all(settings, settings.topic(EVENTS)) if event_id in r.value]
    assert len(landed) == 1
    assert '"tenant":"acme"' in landed[0].value.replace(" ", "")


async def test_queries(settings: Settings) -> None:
    steps = [{"id": "w", "type": "event.wait", "event_type": "go", "correlation_key": "k"}]
    async with worker(settings) as client:
        run_id, handle = await start(settings, client, definition(steps))
        await wait_for_events(settings, run_id, "WaitCreated")
        assert await handle.query("current_step") == "root.steps[0]"
        wait = await handle.query("current_wait")
        assert wait["event_type"] == "go" and wait["correlation_key"] == "k"
        summary = await handle.query("summary")
        assert summary["status"] == "WAITING"
        await handle.signal(
            "deliver_event", DeliveredEvent(event_id="g", event_type="go", correlation_key="k")
        )
        await asyncio.wait_for(handle.result(), 30)
    assert types(await wait_for_events(settings, run_id))[-1] == "RunCompleted"
