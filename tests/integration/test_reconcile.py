"""The tables follow Temporal when an operator acts on Temporal directly (terminate and
reset through the `temporal` CLI, `runs terminate`), the router stops routing to a
terminated run, and every run-control request lands in the operator audit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from typer.testing import CliRunner

from flowledger.cli import _register, app
from flowledger.settings import Settings
from flowledger.stack import temporal as temporal_stack
from schemas.envelope import EventEnvelope
from tests.integration.runtime_support import (
    definition,
    processing,
    projector,
    record,
    routed_waits,
    start,
    worker,
)
from tests.waiting import until
from topics.catalogue import AUDIT
from topics.publisher import publish
from topics.reader import read_all
from workflows import control
from workflows.client import connect
from workflows.definitions import store
from workflows.interpreter_workflow import InterpreterWorkflow
from workflows.messages import DeliveredEvent, run_workflow_id
from workflows.reconciler import Reconciler

_register()

# The bound: Temporal's verdict is in `runs show` within this many seconds.
REFLECTED_S = 30.0


def cli(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), obj={"settings": settings}, catch_exceptions=False)


def shown(settings: Settings, run_id: str) -> dict[str, Any] | None:
    result = cli(settings, "runs", "show", run_id, "--json")
    if result.exit_code != 0:
        return None
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def temporal_cli(settings: Settings, *args: str) -> None:
    binary = temporal_stack.binary(settings.stack)
    subprocess.run(
        [
            binary,
            *args,
            "--address",
            settings.temporal.address,
            "--namespace",
            settings.temporal.namespace,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


@asynccontextmanager
async def reconciling(settings: Settings) -> AsyncIterator[Reconciler]:
    instance = Reconciler(settings, await connect(settings))
    stop = asyncio.Event()
    task = asyncio.create_task(instance.run(stop))
    try:
        yield instance
    finally:
        stop.set()
        await task
        instance.close()


def waiting_twice(key: str) -> dict[str, Any]:
    return definition(
        [
            {"id": "first", "type": "event.wait", "event_type": "go", "correlation_key": key},
            {"id": "mark", "type": "assign", "assign": {"vars.went": True}},
            {"id": "second", "type": "event.wait", "event_type": "next", "correlation_key": key},
        ]
    )


def audits_of(settings: Settings, event_id: str) -> list[dict[str, Any]]:
    found = [json.loads(r.value) for r in read_all(settings, settings.topic(AUDIT))]
    return [a for a in found if a["event_id"] == event_id]


def assert_rebuild_is_identical(settings: Settings) -> None:
    verified = cli(settings, "replay", "verify", "--shadow", "--json")
    assert verified.exit_code == 0, verified.stdout
    assert json.loads(verified.stdout)["identical"] is True


async def test_terminate_through_the_temporal_cli_is_reflected_and_unrouted(
    settings: Settings,
) -> None:
    key = f"k-{uuid.uuid4().hex[:8]}"
    async with (
        worker(settings) as client,
        processing(settings) as runner,
        reconciling(settings),
    ):
        with projector(settings):
            run_id, _handle = await start(settings, client, waiting_twice(key))
            await until(
                lambda: (shown(settings, run_id) or {}).get("run", {}).get("status") == "WAITING",
                REFLECTED_S,
                "the run WAITING in the tables",
            )
            await until(
                lambda: routed_waits(runner, "acme", "go", key),
                REFLECTED_S,
                "the wait in the router",
            )
            await asyncio.to_thread(
                temporal_cli,
                settings,
                "workflow",
                "terminate",
                "--workflow-id",
                run_workflow_id(run_id),
                "--reason",
                "stopped from the Temporal CLI",
            )

            def terminated() -> dict[str, Any] | None:
                document = shown(settings, run_id)
                if document is None or document["run"]["status"] != "TERMINATED":
                    return None
                return document

            document = await until(terminated, REFLECTED_S, "TERMINATED in runs show")
            assert document["run"]["error"]["message"] == "stopped from the Temporal CLI"
            assert document["run"]["completed_at"] is not None
            assert [(w["wait_id"], w["status"]) for w in document["waits"]] == [
                (document["waits"][0]["wait_id"], "CANCELED")
            ]
            await until(
                lambda: not routed_waits(runner, "acme", "go", key),
                REFLECTED_S,
                "the wait gone from the router",
            )
            event = EventEnvelope(
                event_id=uuid.uuid4(),
                event_type="go",
                tenant="acme",
                occurred_at=datetime.now(UTC),
                workflow_correlation_key=key,
            )
            publish(settings, [(1, event)])
            audited = await until(
                lambda: audits_of(settings, str(event.event_id)),
                REFLECTED_S,
                "the event's audit",
            )
            # Not signalled: no delivery to the terminated run, in any audit of it.
            assert all(a["deliveries"] == [] for a in audited), audited


async def test_reset_through_the_temporal_cli_shows_temporals_history(
    settings: Settings,
) -> None:
    key = f"k-{uuid.uuid4().hex[:8]}"
    async with worker(settings) as client, reconciling(settings):
        with projector(settings):
            run_id, handle = await start(settings, client, waiting_twice(key))
            await until(
                lambda: (shown(settings, run_id) or {}).get("waits"), REFLECTED_S, "wait one"
            )
            await handle.signal(
                "deliver_event",
                DeliveredEvent(event_id="go-1", event_type="go", correlation_key=key),
            )

            def at_second_wait() -> dict[str, Any] | None:
                document = shown(settings, run_id)
                if document is None or len(document["waits"]) != 2:
                    return None
                return document

            before = await until(at_second_wait, REFLECTED_S, "the second wait")
            assert [w["status"] for w in before["waits"]] == ["RESOLVED", "OPEN"]
            await asyncio.to_thread(
                temporal_cli,
                settings,
                "workflow",
                "reset",
                "--workflow-id",
                run_workflow_id(run_id),
                "--type",
                "FirstWorkflowTask",
                "--reapply-exclude",
                "Signal",
                "--reason",
                "back to the first wait",
            )

            def back_at_first_wait() -> dict[str, Any] | None:
                document = shown(settings, run_id)
                if document is None:
                    return None
                waits = [(w["event_type"], w["status"]) for w in document["waits"]]
                return document if waits == [("go", "OPEN")] else None

            after = await until(back_at_first_wait, REFLECTED_S, "Temporal's history after reset")
            assert after["run"]["status"] == "WAITING"
            assert [s["step_id"] for s in after["steps"]] == ["first"]
            # The reset execution goes on, and its new events are taken by seq.
            await handle.signal(
                "deliver_event",
                DeliveredEvent(event_id="go-2", event_type="go", correlation_key=key),
            )

            def moved_on() -> dict[str, Any] | None:
                document = shown(settings, run_id)
                if document is None:
                    return None
                waits = [(w["event_type"], w["status"]) for w in document["waits"]]
                return document if waits == [("go", "RESOLVED"), ("next", "OPEN")] else None

            resumed = await until(moved_on, REFLECTED_S, "the reset run resumed")
            assert [w["matched_event_id"] for w in resumed["waits"]] == ["go-2", None]
            await handle.terminate(reason="clean up")
            await until(
                lambda: (
                    (shown(settings, run_id) or {}).get("run", {}).get("status") == "TERMINATED"
                ),
                REFLECTED_S,
                "the clean-up terminate",
            )
    # Replay gives the same tables: the reset record rebuilds the same way from the log.
    assert_rebuild_is_identical(settings)


async def test_an_execution_timeout_ends_the_run_timed_out(settings: Settings) -> None:
    document = waiting_twice(f"k-{uuid.uuid4().hex[:8]}")
    run_id = str(uuid.uuid4())
    async with worker(settings) as client, reconciling(settings):
        with projector(settings):
            # An execution timeout is Temporal's to enforce: no workflow code sees it.
            await client.start_workflow(
                InterpreterWorkflow.run,
                control.run_input_for(settings, record(document), {}, run_id=run_id),
                id=run_workflow_id(run_id),
                task_queue=settings.temporal.task_queue,
                execution_timeout=timedelta(seconds=3),
            )

            def timed_out() -> dict[str, Any] | None:
                found = shown(settings, run_id)
                return found if found and found["run"]["status"] == "TIMED_OUT" else None

            found = await until(timed_out, REFLECTED_S, "TIMED_OUT in runs show")
    assert [w["status"] for w in found["waits"]] == ["CANCELED"]
    assert found["run"]["completed_at"] is not None


async def test_runs_terminate_and_the_operator_audit(settings: Settings) -> None:
    document = waiting_twice(f"k-{uuid.uuid4().hex[:8]}")
    store.publish(settings, document)
    async with worker(settings), reconciling(settings):
        with projector(settings):
            started = await asyncio.to_thread(
                cli,
                settings,
                "runs",
                "start",
                document["id"],
                "--tenant",
                "acme",
                "--by",
                "alice",
                "--json",
            )
            assert started.exit_code == 0, started.stdout
            run_id = json.loads(started.stdout)["run_id"]
            await until(
                lambda: (shown(settings, run_id) or {}).get("run", {}).get("status") == "WAITING",
                REFLECTED_S,
                "the run WAITING",
            )
            resumed = await asyncio.to_thread(
                cli,
                settings,
                "runs",
                "resume",
                run_id,
                "--reason",
                "please",
                "--by",
                "bob",
                "--json",
            )
            assert resumed.exit_code == 2
            unreachable = settings.model_copy(
                update={"temporal": settings.temporal.model_copy(update={"address": "127.0.0.1:9"})}
            )
            refused = await asyncio.to_thread(
                cli, unreachable, "runs", "terminate", run_id, "--reason", "stop it", "--json"
            )
            assert refused.exit_code == 2
            error = json.loads(refused.stdout)["error"]
            assert error["code"] == "WORKFLOW_TEMPORAL_TERMINATE_FAILED" and error["status"] == 409
            assert (shown(settings, run_id) or {})["run"]["status"] == "WAITING"
            done = await asyncio.to_thread(
                cli,
                settings,
                "runs",
                "terminate",
                run_id,
                "--reason",
                "operator stop",
                "--by",
                "carol",
                "--json",
            )
            assert done.exit_code == 0, done.stdout
            ended = await until(
                lambda: (
                    (shown(settings, run_id) or {}).get("run", {}).get("status") == "TERMINATED"
                ),
                REFLECTED_S,
                "TERMINATED through the reconcile event",
            )
            assert ended
            again = await asyncio.to_thread(
                cli, settings, "runs", "terminate", run_id, "--reason", "once more", "--json"
            )
            assert again.exit_code == 2
            assert json.loads(again.stdout)["error"]["code"] == "WORKFLOW_TEMPORAL_TERMINATE_FAILED"
            late = await asyncio.to_thread(
                cli, settings, "runs", "cancel", run_id, "--reason", "too late", "--json"
            )
            assert late.exit_code == 2
            task_id = f"task-{uuid.uuid4().hex[:8]}"
            unknown = await asyncio.to_thread(
                cli, settings, "tasks", "complete", task_id, "--data", "{}", "--json"
            )
            assert unknown.exit_code == 2

            def task_listed() -> list[dict[str, Any]] | None:
                result = cli(settings, "audit", "operators", "--action", "task_complete", "--json")
                found: list[dict[str, Any]] = json.loads(result.stdout)
                return found or None

            tasks = await until(task_listed, REFLECTED_S, "the task completion's audit")
            assert [(i["task_id"], i["outcome"], i["code"]) for i in tasks] == [
                (task_id, "refused", "HUMAN_TASK_NOT_FOUND")
            ]
            assert tasks[0]["requested_by"]  # the OS user when --by is not given

            def listed() -> list[dict[str, Any]] | None:
                result = cli(settings, "audit", "operators", "--run", run_id, "--json")
                if result.exit_code != 0:
                    return None
                items: list[dict[str, Any]] = json.loads(result.stdout)
                return items if len(items) == 6 else None

            items = await until(listed, REFLECTED_S, "six operator actions")
    assert [(i["action"], i["outcome"], i["code"]) for i in items] == [
        ("start", "accepted", None),
        ("resume", "refused", "WORKFLOW_TEMPORAL_ACTION_UNSUPPORTED"),
        ("terminate", "refused", "WORKFLOW_TEMPORAL_TERMINATE_FAILED"),
        ("terminate", "accepted", None),
        ("terminate", "refused", "WORKFLOW_TEMPORAL_TERMINATE_FAILED"),
        ("cancel", "refused", "WORKFLOW_TEMPORAL_CANCEL_FAILED"),
    ]
    assert [i["requested_by"] for i in items[:2]] == ["alice", "bob"]
    assert items[3]["requested_by"] == "carol" and items[3]["reason"] == "operator stop"
    assert {i["tenant"] for i in items} == {"acme"}
    assert all(i["requested_at"] for i in items)
    assert_rebuild_is_identical(settings)
