"""`flowledger tasks complete TASK_ID --data JSON --by USER`."""

from __future__ import annotations

from typing import Any

import typer

from flowledger.cli import context
from flowledger.cli.operators import by_option, default_operator
from flowledger.cli.output import JSON_FLAG, console, print_json, refusals
from flowledger.operations import json_input as inputs
from flowledger.operations.task_actions import complete_task
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

    def response() -> Any:
        return inputs.parse(
            data,
            "--data",
            settings.records,
            code=HUMAN_TASK_RESPONSE_INVALID,
            errors=[{"path": "(response)", "message": "not acceptable JSON"}],
        )

    with refusals(as_json):
        document = complete_task(settings, task_id, response, by, passthrough=(typer.Exit,))
    if as_json:
        print_json(document)
    else:
        console.print(f"task {task_id} completed by {by}; run {document['run_id']} resumes")
