"""`flowledger tasks complete TASK_ID --data JSON --by USER`."""

from __future__ import annotations

import asyncio

import typer

from flowledger.cli import context, inputs
from flowledger.cli.operators import Request, audited, by_option, default_operator
from flowledger.cli.output import JSON_FLAG, console, print_json, refusals
from projections import lookups
from workflows import tasks
from workflows.client import connect
from workflows.codes import HUMAN_TASK_RESPONSE_INVALID


def complete(
    ctx: typer.Context,
    task_id: str = typer.Argument(..., help="The task."),
    data: str = typer.Option(..., "--data", help="The response as a JSON object."),
    by: str | None = by_option("Who completed it."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Complete a human task; the response must match the task's form schema."""
    settings = context.settings(ctx)
    by = by or default_operator()
    request = Request("task_complete", by, task_id=task_id)
    with refusals(as_json), audited(settings, request):
        response = inputs.parse(
            data,
            "--data",
            settings.records,
            code=HUMAN_TASK_RESPONSE_INVALID,
            errors=[{"path": "(response)", "message": "not acceptable JSON"}],
        )

        url = settings.database_url()
        task = lookups.find_task(url, task_id)
        request.run_id = str(task["run_id"])
        request.tenant = task.get("tenant")
        workflow_id = lookups.workflow_id_of(url, str(task["run_id"]))
        document = asyncio.run(
            tasks.complete(
                settings, lambda: connect(settings), task, response, by, workflow_id=workflow_id
            )
        )
    if as_json:
        print_json(document)
    else:
        console.print(f"task {task_id} completed by {by}; run {document['run_id']} resumes")
