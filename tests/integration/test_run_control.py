"""Run control against real Temporal: cancel through Temporal only, refusals that
change nothing, rerun on the pinned version, and stable events across a worker
restart."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from typer.testing import CliRunner

from flowledger.cli import _register, app
from flowledger.settings import Settings
from schemas.runtime import runtime_event_id
from tests.integration.runtime_support import (
    completed,
    definition,
    events_of,
    of_type,
    start,
    types,
    wait_for_events,
    worker,
)
from workflows import control
from workflows.messages import DeliveredEvent

_register()

WAITING = [
    {
        "id": "guard",
        "type": "control.tryCatch",
        "capture_error_as": "err",
        "try": [{"id": "w", "type": "event.wait", "event_type": "never", "correlation_key": "k"}],
        "catch": [{"id": "caught", "type": "assign", "assign": {"vars.caught": True}}],
    },
]


def cli(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), obj={"settings": settings}, catch_exceptions=False)


async def test_cancel_waiting_run_is_not_caught(settings: Settings) -> None:
    async with worker(settings) as client:
        run_id, handle = await start(settings, client, definition(WAITING))
        await wait_for_events(settings, run_id, "WaitCreated")
        reply = await control.cancel(settings, client, run_id, "customer withdrew")
        assert reply["ok"] is True
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    events = await wait_for_events(settings, run_id)
    done = completed(events)
    assert done["status"] == "CANCELED"
    assert done["error"]["category"] == "Cancellation"
    assert of_type(events, "WaitResolved")[-1]["data"]["resolution"] == "CANCELED"
    log = of_type(events, "RunLog")[0]["data"]
    assert "customer withdrew" in log["message"] and log["details"]["action"] == "cancel"
    # tryCatch never catches a cancellation.
    assert not any(e["data"].get("step_id") == "caught" for e in of_type(events, "StepStarted"))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_cancel_with_temporal_unreachable_changes_nothing(settings: Settings) -> None:
    async with worker(settings) as client:
        run_id, _handle = await start(settings, client, definition(WAITING))
        before = await wait_for_events(settings, run_id, "WaitCreated")
        unreachable = settings.model_copy(
            update={"temporal": settings.temporal.model_copy(update={"address": "127.0.0.1:9"})}
        )
        result = await asyncio.to_thread(
            cli, unreachable, "runs", "cancel", run_id, "--reason", "stop it", "--json"
        )
        assert result.exit_code == 2
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "WORKFLOW_TEMPORAL_CANCEL_FAILED"
        assert error["status"] == 409 and error["engine"] == "temporal"
        assert error["action"] == "cancel" and error["run_id"] == run_id and error["hint"]
        assert events_of(settings, run_id) == before
        await control.cancel(settings, client, run_id, "clean up")


@pytest.mark.parametrize("action", ["resume", "retry", "requeue"])
async def test_unsupported_actions_refuse_and_change_nothing(
    settings: Settings, action: str
) -> None:
    async with worker(settings) as client:
        run_id, _handle = await start(settings, client, definition(WAITING))
        before = await wait_for_events(settings, run_id, "WaitCreated")
        result = await asyncio.to_thread(
            cli, settings, "runs", action, run_id, "--reason", "please", "--json"
        )
        assert result.exit_code == 2
        error = json.loads(result.stdout)["error"]
        assert error == {
            **error,
            "code": "WORKFLOW_TEMPORAL_ACTION_UNSUPPORTED",
            "status": 409,
            "action": action,
            "engine": "temporal",
            "run_id": run_id,
        }
        assert error["hint"]
        assert events_of(settings, run_id) == before
        await control.cancel(settings, client, run_id, "clean up")


async def test_unknown_run_and_short_reason(settings: Settings) -> None:
    async with worker(settings):
        missing = str(uuid.uuid4())
        result = await asyncio.to_thread(
            cli, settings, "runs", "cancel", missing, "--reason", "because", "--json"
        )
        error = json.loads(result.stdout)["error"]
        assert result.exit_code == 2
        assert error["code"] == "RUN_NOT_FOUND" and error["status"] == 404
        result = await asyncio.to_thread(
            cli, settings, "runs", "resume", missing, "--reason", "no", "--json"
        )
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "INVALID_REQUEST" and error["status"] == 400


async def test_rerun_uses_the_original_input_and_pinned_version(settings: Settings) -> None:
    doc = definition(
        [
            {
                "id": "r",
                "type": "control.return",
                "output": {"$expr": "{'n': payload.n, 'v': system.version}"},
            }
        ]
    )
    async with worker(settings) as client:
        run_id, handle = await start(settings, client, doc, {"n": 5})
        await handle.result()
        reply = await control.rerun(settings, client, run_id, "audit asked")
        new_id = reply["run_id"]
        assert new_id != run_id and reply["rerun_of"] == run_id
        assert (await client.get_workflow_handle(f"flowledger:run:{new_id}").result())[
            "output"
        ] == {"n": 5, "v": 1}
    events = await wait_for_events(settings, new_id)
    assert events[0]["data"]["input"] == {"n": 5}
    assert (
        events[0]["data"]["definition_hash"]
        == (await wait_for_events(settings, run_id))[0]["data"]["definition_hash"]
    )


async def test_start_refuses_input_that_breaks_the_payload_schema(settings: Settings) -> None:
    from tests.integration.runtime_support import record

    doc = definition(
        [],
        payload_schema={
            "type": "object",
            "required": ["n"],
            "properties": {"n": {"type": "integer"}},
        },
    )
    client = await Client.connect(settings.temporal.address)
    with pytest.raises(Exception) as caught:
        await control.start(settings, client, record(doc), {"n": "five"})
    assert getattr(caught.value, "code", None) == "RUN_INPUT_INVALID"


async def test_events_are_stable_across_a_worker_restart(settings: Settings) -> None:
    steps = [
        {"id": "a", "type": "assign", "assign": {"vars.x": 1}},
        {"id": "w", "type": "event.wait", "event_type": "go", "correlation_key": "k"},
        {"id": "b", "type": "assign", "assign": {"vars.y": 2}},
    ]
    async with worker(settings) as client:
        run_id, handle = await start(settings, client, definition(steps))
        first = await wait_for_events(settings, run_id, "WaitCreated")
    # The first worker is gone; a fresh one (empty cache) replays the history.
    async with worker(settings) as client:
        handle = client.get_workflow_handle(f"flowledger:run:{run_id}")
        await handle.signal(
            "deliver_event", DeliveredEvent(event_id="go-1", event_type="go", correlation_key="k")
        )
        await handle.result()
    events = await wait_for_events(settings, run_id)
    assert events[: len(first)] == first
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["event_id"] == str(runtime_event_id(run_id, e["seq"])) for e in events)
    assert types(events)[-1] == "RunCompleted"
