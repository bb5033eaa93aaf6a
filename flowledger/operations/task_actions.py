"""Completing a human task, audited: the response is checked against the task's form
schema before anything reaches Temporal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from flowledger.operations.audit_trail import Request, audited
from flowledger.settings import Settings
from projections import lookups
from workflows import tasks
from workflows.client import connect

# Raises when the caller may not act on this task (the API's tenant check); it runs
# inside the audit, after the task is found.
TaskCheck = Callable[[Mapping[str, Any]], None]


def complete_task(
    settings: Settings,
    task_id: str,
    response: Callable[[], Any],
    completed_by: str,
    *,
    check: TaskCheck | None = None,
    passthrough: tuple[type[BaseException], ...] = (),
) -> dict[str, Any]:
    """``response`` parses the answer inside the audit, so an unparseable one is a
    recorded refusal too. Returns the answer of `tasks complete --json`."""
    request = Request("task_complete", completed_by, task_id=task_id)
    with audited(settings, request, passthrough=passthrough):
        url = settings.database_url()
        task = lookups.find_task(url, task_id)
        if check is not None:
            check(task)
        request.run_id = str(task["run_id"])
        request.tenant = task.get("tenant")
        answer = response()
        workflow_id = lookups.workflow_id_of(url, str(task["run_id"]))
        return asyncio.run(
            tasks.complete(
                settings,
                lambda: connect(settings),
                task,
                answer,
                completed_by,
                workflow_id=workflow_id,
            )
        )
