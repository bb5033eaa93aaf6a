"""Completing a human task: validate the response against the task's form schema,
then signal the run. The run learns of a completion only through that signal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from temporalio.client import Client

from flowledger.errors import FlowledgerError, InvalidInput, ServiceUnavailable
from flowledger.settings import Settings
from workflows.codes import (
    HUMAN_TASK_NOT_OPEN,
    HUMAN_TASK_RESPONSE_INVALID,
    INVALID_REQUEST,
    WORKFLOW_TEMPORAL_SIGNAL_FAILED,
)
from workflows.interpreter_workflow import InterpreterWorkflow
from workflows.messages import TaskCompletion, run_workflow_id
from workflows.steps_effects import schema_problems


def check_response(task: Mapping[str, Any], response: Any) -> None:
    if not isinstance(response, dict):
        raise InvalidInput(
            "a task response is a JSON object",
            code=HUMAN_TASK_RESPONSE_INVALID,
            status=400,
            task_id=task["task_id"],
            errors=[{"path": "(response)", "message": "not an object"}],
        )
    problems = schema_problems(task.get("form_schema") or {}, response)
    if problems:
        raise InvalidInput(
            f"the response does not match the task's form schema: {problems[0]['message']}",
            code=HUMAN_TASK_RESPONSE_INVALID,
            status=400,
            task_id=task["task_id"],
            errors=problems,
        )


async def complete(
    settings: Settings,
    connect: Callable[[], Awaitable[Client]],
    task: Mapping[str, Any],
    response: Any,
    completed_by: str,
    *,
    workflow_id: str | None = None,
) -> dict[str, Any]:
    """Validate, then connect and signal: a refused response never reaches Temporal.
    ``task`` is the task as projected (the index of open tasks; the run decides)."""
    if not completed_by.strip():
        raise InvalidInput("--by names who completed the task", code=INVALID_REQUEST, status=400)
    task_id = str(task["task_id"])
    if str(task.get("status")).upper() != "OPEN":
        raise FlowledgerError(
            f"task {task_id} is {task.get('status')}, not open",
            code=HUMAN_TASK_NOT_OPEN,
            status=409,
            task_id=task_id,
        )
    check_response(task, response)
    run_id = str(task["run_id"])
    client = await connect()
    handle = client.get_workflow_handle(workflow_id or run_workflow_id(run_id))
    try:
        await handle.signal(
            InterpreterWorkflow.complete_human_task,
            TaskCompletion(task_id=task_id, response=response, completed_by=completed_by),
        )
    except Exception as exc:
        raise ServiceUnavailable(
            f"Temporal did not take the completion: {exc}",
            code=WORKFLOW_TEMPORAL_SIGNAL_FAILED,
            status=409,
            task_id=task_id,
            run_id=run_id,
        ) from exc
    return {"ok": True, "task_id": task_id, "run_id": run_id, "completed_by": completed_by}
