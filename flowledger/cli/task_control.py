"""`flowledger tasks complete TASK_ID --data JSON --by USER`."""

from __future__ import annotations

import asyncio

import typer

from flowledger.cli import context, inputs
from flowledger.cli.output import JSON_FLAG, console, print_json, refusals
from workflows import tasks
from workflows.client import connect
from workflows.codes import HUMAN_TASK_RESPONSE_INVALID


def complete(
    ctx: typer.Context,
    task_id: str = typer.Argument(..., help="The task."),
    data: str = typer.Option(..., "--data", help="The response as a JSON object."),
    by: str = typer.Option(..., "--by", help="Who completed it."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Complete a human task; the response must match the task's form schema."""
    settings = context.settings(ctx)
    with refusals(as_json):
        response = inputs.parse(
            data,
            "--data",
            settings.records,
            code=HUMAN_TASK_RESPONSE_INVALID,
            errors=[{"path": "(response)", "message": "not acceptable JSON"}],
        )

        document = asyncio.run(
            tasks.complete(settings, lambda: connect(settings), task_id, response, by)
        )
    if as_json:
        print_json(document)
    else:
        console.print(f"task {task_id} completed by {by}; run {document['run_id']} resumes")
