"""Long and composed runs on the real dev server: human tasks, child runs,
continue-as-new with events arriving during the switch-overs, pinned versions."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from typer.testing import CliRunner

from flowledger.cli import _register, app
from flowledger.settings import Settings
from projections import db, queries
from tests.integration.runtime_support import (
    completed,
    definition,
    of_type,
    projector,
    start,
    until,
    wait_for_events,
    worker,
)
from workflows import control
from workflows.definitions import store
from workflows.messages import DeliveredEvent, TaskCompletion
from workflows.semantics import SEMANTICS_VERSION

_register()

FORM = {
    "type": "object",
    "required": ["decision"],
    "properties": {"decision": {"enum": ["close", "keep-open"]}},
    "additionalProperties": False,
}


def cli(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), obj={"settings": settings}, catch_exceptions=False)


def open_tasks(settings: Settings) -> list[dict[str, Any]]:
    engine = db.engine(settings.database_url())
    try:
        with engine.connect() as conn:
            return queries.list_tasks(conn, status="OPEN")
    finally:
        engine.dispose()


async def test_human_task_refuses_invalid_then_takes_valid(settings: Settings) -> None:
    steps = [
        {
            "id": "ask",
            "type": "human.task",
            "task_type": "review",
            "title": {"$expr": "'Review ' & payload.ticket"},
            "description": "Decide",
            "context": {"ticket": {"$expr": "payload.ticket"}},
            "form_schema": FORM,
            "assign": {
                "vars.decision": {"$expr": "task.response.decision"},
                "vars.by": {"$expr": "task.completed_by"},
            },
        },
        {
            "id": "ret",
            "type": "control.return",
            "output": {"$expr": "{'decision': vars.decision, 'by': vars.by}"},
        },
    ]
    with projector(settings):
        async with worker(settings) as client:
            run_id, handle = await start(settings, client, definition(steps), {"ticket": "T-7"})
            tasks = await until(lambda: open_tasks(settings), what="the open task")
            task = tasks[0]
            assert task["form_schema"] == FORM and task["title"] == "Review T-7"
            listed = await asyncio.to_thread(cli, settings, "tasks", "list", "--json")
            assert any(t["task_id"] == task["task_id"] for t in json.loads(listed.stdout))

            bad = await asyncio.to_thread(
                cli,
                settings,
                "tasks",
                "complete",
                task["task_id"],
                "--data",
                '{"decision": "maybe"}',
                "--by",
                "ada",
                "--json",
            )
            assert bad.exit_code == 2
            error = json.loads(bad.stdout)["error"]
            assert error["code"] == "HUMAN_TASK_RESPONSE_INVALID"
            assert error["errors"][0]["path"] == "decision"
            summary = await handle.query("summary")
            assert summary["status"] == "WAITING" and summary["open_tasks"] == [task["task_id"]]

            good = await asyncio.to_thread(
                cli,
                settings,
                "tasks",
                "complete",
                task["task_id"],
                "--data",
                '{"decision": "close"}',
                "--by",
                "ada",
                "--json",
            )
            assert good.exit_code == 0, good.stdout
            result = await asyncio.wait_for(handle.result(), 30)
        assert result["output"] == {"decision": "close", "by": "ada"}
        await until(lambda: not open_tasks(settings), what="the task to close")
    events = await wait_for_events(settings, run_id)
    created = of_type(events, "HumanTaskCreated")[0]["data"]
    assert created["context"] == {"ticket": "T-7"} and created["task_type"] == "review"
    assert of_type(events, "HumanTaskCompleted")[0]["data"]["completed_by"] == "ada"


async def test_an_invalid_response_signalled_straight_to_the_run_is_caught(
    settings: Settings,
) -> None:
    """A response that skipped the CLI's check (a raw Temporal signal) fails the task's
    step with a catchable ValidationError; the task shows REFUSED, and the run row its
    pinned semantics version."""
    steps = [
        {
            "id": "guard",
            "type": "control.tryCatch",
            "capture_error_as": "err",
            "try": [
                {
                    "id": "ask",
                    "type": "human.task",
                    "task_type": "t",
                    "title": "T",
                    "form_schema": FORM,
                    "assign": {"vars.d": {"$expr": "task.response.decision"}},
                }
            ],
            "catch": [{"id": "c", "type": "assign", "assign": {"vars.d": "refused"}}],
        },
        {
            "id": "r",
            "type": "control.return",
            "output": {
                "$expr": "{'d': vars.d, 'category': vars.err.category, 'code': vars.err.code}"
            },
        },
    ]
    with projector(settings):
        async with worker(settings) as client:
            run_id, handle = await start(settings, client, definition(steps))
            events = await wait_for_events(settings, run_id, "HumanTaskCreated")
            task_id = of_type(events, "HumanTaskCreated")[0]["data"]["task_id"]
            await handle.signal(
                "complete_human_task",
                TaskCompletion(task_id=task_id, response={"decision": 5}, completed_by="x"),
            )
            result = await asyncio.wait_for(handle.result(), 30)
        assert result["output"] == {
            "d": "refused",
            "category": "ValidationError",
            "code": "HUMAN_TASK_RESPONSE_INVALID",
        }

        def projected() -> tuple[Any, Any] | None:
            engine = db.engine(settings.database_url())
            try:
                with engine.connect() as conn:
                    run = queries.find_run(conn, run_id)
                    tasks = queries.list_tasks(conn, run_id=run_id)
            finally:
                engine.dispose()
            if run is None or run["status"] != "SUCCEEDED" or not tasks:
                return None
            return run, tasks[0]

        run, task = await until(projected, what="the run and its task in the tables")
    assert run["semantics_version"] == SEMANTICS_VERSION
    assert (task["status"], task["completed_by"]) == ("REFUSED", "x")
    events = await wait_for_events(settings, run_id)
    assert events[0]["data"]["semantics_version"] == SEMANTICS_VERSION
    refused = of_type(events, "HumanTaskCompleted")[0]["data"]
    assert refused["status"] == "REFUSED" and refused["response"] == {"decision": 5}
    assert of_type(events, "WaitResolved")[0]["data"]["resolution"] == "CANCELED"


def publish(settings: Settings, document: dict[str, Any]) -> None:
    store.publish(settings, document)


CHILD = {
    "id": "child-def",
    "version": 1,
    "tenant": "acme",
    "name": "child",
    "description": "",
    "payload_schema": {
        "type": "object",
        "required": ["n"],
        "properties": {"n": {"type": "integer"}},
    },
    "steps": [
        {
            "id": "maybe-fail",
            "type": "control.if",
            "condition": {"$expr": "payload.n < 0"},
            "then": [
                {
                    "id": "boom",
                    "type": "action.call",
                    "action": "core.http_request",
                    "version": 1,
                    "input": {"url": "http://example.invalid/"},
                }
            ],
            "else": [],
        },
        {
            "id": "w",
            "type": "control.if",
            "condition": {"$expr": "payload.n = 0"},
            "then": [
                {"id": "hold", "type": "event.wait", "event_type": "never", "correlation_key": "k"}
            ],
            "else": [],
        },
        {"id": "ret", "type": "control.return", "output": {"$expr": "{'double': payload.n * 2}"}},
    ],
}


def parent(n: int, retry: dict[str, Any] | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": "call",
        "type": "control.callWorkflow",
        "definition_id": "child-def",
        "version": 1,
        "input": {"n": {"$expr": "payload.n"}},
        "output": {
            "vars.result": {"$expr": "child.output.double"},
            "vars.child_id": {"$expr": "child.run_id"},
        },
    }
    if retry:
        call["retry"] = retry
    return definition(
        [
            {
                "id": "guard",
                "type": "control.tryCatch",
                "capture_error_as": "err",
                "try": [call],
                "catch": [
                    {
                        "id": "c",
                        "type": "assign",
                        "assign": {"vars.failed": {"$expr": "vars.err.category"}},
                    }
                ],
            },
            {
                "id": "ret",
                "type": "control.return",
                "output": {
                    "$expr": "{'result': vars.result, 'failed': vars.failed, "
                    "'child': vars.child_id}"
                },
            },
        ]
    )


async def test_call_workflow_maps_input_and_output(settings: Settings) -> None:
    await asyncio.to_thread(publish, settings, CHILD)
    async with worker(settings) as client:
        run_id, handle = await start(settings, client, parent(21), {"n": 21})
        result = await asyncio.wait_for(handle.result(), 60)
    output = result["output"]
    assert output["result"] == 42 and "failed" not in output
    child_events = await wait_for_events(settings, output["child"])
    started = child_events[0]["data"]
    assert started["parent_run_id"] == run_id and started["root_run_id"] == run_id
    assert started["parent_step_path"] == "root.steps[0].try.steps[0]"
    assert started["workflow_id"] == f"flowledger:run:{output['child']}"


async def test_child_failure_is_retried_and_catchable(settings: Settings) -> None:
    await asyncio.to_thread(publish, settings, CHILD)
    async with worker(settings) as client:
        run_id, handle = await start(
            settings, client, parent(-1, {"max_attempts": 2, "backoff_ms": 10}), {"n": -1}
        )
        result = await asyncio.wait_for(handle.result(), 60)
    assert result["output"]["failed"] == "ChildWorkflowError"
    events = await wait_for_events(settings, run_id)
    caught = of_type(events, "StepCompleted")
    guard = next(e for e in caught if e["data"]["step_id"] == "guard")
    assert guard["data"]["output"]["error"]["category"] == "ChildWorkflowError"


async def test_cancelling_the_parent_cancels_the_child(settings: Settings) -> None:
    await asyncio.to_thread(publish, settings, CHILD)
    async with worker(settings) as client:
        run_id, handle = await start(settings, client, parent(0), {"n": 0})
        await wait_for_events(settings, run_id, "StepStarted")

        def child_waiting() -> str | None:
            from topics.catalogue import RUNTIME
            from topics.reader import read_all

            for record in read_all(settings, settings.topic(RUNTIME)):
                event = json.loads(record.value)
                if event["type"] == "WaitCreated" and event["run_id"] != run_id:
                    return str(event["run_id"])
            return None

        child_id = await until(child_waiting, what="the child's wait")
        await control.cancel(settings, client, run_id, "parent no longer needed")
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 30)
    assert completed(await wait_for_events(settings, run_id))["status"] == "CANCELED"
    child_events = await wait_for_events(settings, child_id)
    assert completed(child_events)["status"] == "CANCELED"
    assert of_type(child_events, "WaitResolved")[-1]["data"]["resolution"] == "CANCELED"


async def test_two_thousand_steps_with_events_during_switch_overs(settings: Settings) -> None:
    ticks = 20
    steps = [
        {
            "id": "loop",
            "type": "control.forEach",
            "items": {"$expr": "[1..1999]"},
            "item_var": "i",
            "body": [
                {
                    "id": "count",
                    "type": "assign",
                    "assign": {"vars.n": {"$expr": "coalesce(vars.n, 0) + 1"}},
                }
            ],
        },
        {
            "id": "collect",
            "type": "control.forEach",
            "items": {"$expr": f"[1..{ticks}]"},
            "item_var": "t",
            "body": [
                {
                    "id": "tick",
                    "type": "event.wait",
                    "event_type": "tick",
                    "correlation_key": "K",
                    "assign": {
                        "vars.seen": {"$expr": "append(coalesce(vars.seen, []), event.event_id)"}
                    },
                }
            ],
        },
        {
            "id": "ret",
            "type": "control.return",
            "output": {"$expr": "{'n': vars.n, 'seen': vars.seen}"},
        },
    ]
    async with worker(settings) as client:
        started = time.monotonic()
        run_id, handle = await start(settings, client, definition(steps))

        async def past(step: int) -> bool:
            # The latest execution of the chain answers, whichever switch-over it is in.
            summary = await handle.query("summary")
            return int(summary["steps_total"]) >= step

        for k in range(ticks):
            # Spread the ticks over the counting loop, so they arrive while the run
            # keeps switching to new executions.
            await until(functools.partial(past, k * 90), 60, f"step {k * 90}")
            event = DeliveredEvent(
                event_id=f"tick-{k}", event_type="tick", correlation_key="K", payload={"k": k}
            )
            await handle.signal("deliver_event", event)
            await handle.signal("deliver_event", event)  # a duplicate, dropped
        result = await asyncio.wait_for(handle.result(), 120)
        seconds = time.monotonic() - started
    assert result["output"]["n"] == 1999
    assert result["output"]["seen"] == [f"tick-{k}" for k in range(ticks)]
    events = await wait_for_events(settings, run_id, timeout=60)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    switches = len(of_type(events, "RunContinuedAsNew"))
    assert switches >= 2000 // settings.workflows.continue_as_new_steps
    print(
        f"\n2,000-step run: {seconds:.1f}s, {switches} continue-as-new switches, "
        f"{len(events)} runtime events"
    )


async def test_run_stays_on_its_pinned_version(settings: Settings) -> None:
    v1 = {
        "id": "pinned",
        "version": 1,
        "tenant": "acme",
        "name": "p",
        "description": "",
        "steps": [
            {"id": "w", "type": "event.wait", "event_type": "go", "correlation_key": "k"},
            {"id": "r", "type": "control.return", "output": {"$expr": "'v1'"}},
        ],
    }
    v2 = {
        **v1,
        "version": 2,
        "steps": [{"id": "r", "type": "control.return", "output": {"$expr": "'v2'"}}],
    }
    await asyncio.to_thread(publish, settings, v1)
    async with worker(settings) as client:
        record = control.find_definition(settings, "acme", "pinned", None)
        started = await control.start(settings, client, record, {})
        handle = client.get_workflow_handle(started.workflow_id)
        await wait_for_events(settings, started.run_id, "WaitCreated")
        await asyncio.to_thread(publish, settings, v2)
        assert control.find_definition(settings, "acme", "pinned", None).version == 2
        await handle.signal(
            "deliver_event", DeliveredEvent(event_id="g", event_type="go", correlation_key="k")
        )
        assert (await handle.result())["output"] == "v1"
        rerun = await control.rerun(settings, client, started.run_id, "check pin")
        again = client.get_workflow_handle(f"flowledger:run:{rerun['run_id']}")
        await wait_for_events(settings, rerun["run_id"], "WaitCreated")
        assert rerun["version"] == 1
        await again.signal(
            "deliver_event", DeliveredEvent(event_id="g2", event_type="go", correlation_key="k")
        )
        assert (await again.result())["output"] == "v1"


async def test_run_input_over_the_payload_limit_is_refused(settings: Settings) -> None:
    from tests.integration.runtime_support import record

    async with worker(settings) as client:
        with pytest.raises(Exception) as caught:
            await control.start(
                settings, client, record(definition([])), {"big": "x" * (2 * 1024 * 1024)}
            )
    assert getattr(caught.value, "code", None) == "RUN_INPUT_TOO_LARGE"
