"""`flowledger tasks list`: human tasks, as projected."""

from __future__ import annotations

from typing import Any

import typer

from flowledger.cli.output import JSON_FLAG, console, refusals, show, table
from flowledger.cli.runs import DATABASE, database_url
from projections import db, queries

app = typer.Typer(help="Human tasks created by workflow runs.")


def _human(tasks: list[dict[str, Any]]) -> None:
    columns = ["task_id", "run_id", "task_type", "title", "status", "completed_by"]
    rows = [[task[c] for c in columns] for task in tasks]
    console.print(table(f"tasks ({len(tasks)})", columns, rows))


@app.command("list")
def list_(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="OPEN or COMPLETED."),
    run: str | None = typer.Option(None, "--run", help="Only the tasks of this run."),
    limit: int = typer.Option(queries.DEFAULT_LIMIT, "--limit", min=1),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """List human tasks, oldest first."""
    with refusals(as_json), db.reading(database_url(ctx, database)) as conn:
        tasks = queries.list_tasks(
            conn, status=status.upper() if status else None, run_id=run, limit=limit
        )
    show(as_json, tasks, lambda: _human(tasks))
