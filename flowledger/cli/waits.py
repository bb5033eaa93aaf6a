"""`flowledger waits list`: the waits of every run, as projected."""

from __future__ import annotations

from typing import Any

import typer

from flowledger.cli.output import JSON_FLAG, console, refusals, show, table
from flowledger.cli.runs import DATABASE, database_url
from flowledger.errors import InvalidInput
from projections import db, queries

app = typer.Typer(help="Event, time and human waits of workflow runs.")


def _human(waits: list[dict[str, Any]]) -> None:
    columns = ["wait_id", "run_id", "wait_type", "event_type", "correlation_key", "status"]
    rows = [[w[c] for c in columns] + [w["created_at"]] for w in waits]
    console.print(table(f"waits ({len(waits)})", [*columns, "created_at"], rows))


@app.command("list")
def list_(
    ctx: typer.Context,
    run: str | None = typer.Option(None, "--run", help="Only the waits of this run."),
    status: str | None = typer.Option(None, "--status", help="OPEN, RESOLVED, TIMED_OUT, ..."),
    limit: int = typer.Option(queries.DEFAULT_LIMIT, "--limit", min=1),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """List waits, oldest first."""
    with refusals(as_json):
        wanted = status.upper() if status is not None else None
        if wanted is not None and wanted not in queries.WAIT_STATUSES:
            raise InvalidInput(
                f"unknown wait status {status!r}",
                field="--status",
                allowed=list(queries.WAIT_STATUSES),
            )
        with db.reading(database_url(ctx, database)) as conn:
            waits = queries.list_waits(conn, run_id=run, status=wanted, limit=limit)
    show(as_json, waits, lambda: _human(waits))
