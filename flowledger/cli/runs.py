"""`flowledger runs list|show|wait`: the run projection, read from the database."""

from __future__ import annotations

from typing import Any

import typer

from flowledger.cli import context
from flowledger.cli.output import (
    JSON_FLAG,
    console,
    refusals,
    show,
    table,
)
from projections import db, queries

app = typer.Typer(help="Workflow runs, as projected from flowledger.runtime.v1.")

DATABASE = typer.Option(None, "--database", help="Projection database URL (overrides settings).")


def database_url(ctx: typer.Context, database: str | None) -> str:
    return database or context.settings(ctx).database_url()


def _check_status(status: str | None) -> str | None:
    return queries.run_status(status, "--status")


def _runs_table(runs: list[dict[str, Any]]) -> None:
    columns = ["run_id", "tenant", "definition_id", "version", "status", "current_step_path"]
    rows = [[run[c] for c in columns] + [run["updated_at"]] for run in runs]
    console.print(table(f"runs ({len(runs)})", [*columns, "updated_at"], rows))


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: str | None = typer.Option(None, "--tenant"),
    status: str | None = typer.Option(None, "--status", help="RUNNING, WAITING, SUCCEEDED, ..."),
    definition: str | None = typer.Option(None, "--definition", help="Definition id."),
    limit: int = typer.Option(queries.DEFAULT_LIMIT, "--limit", min=1),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """List runs, most recently changed first."""
    with refusals(as_json):
        wanted = _check_status(status)
        with db.reading(database_url(ctx, database)) as conn:
            runs = queries.list_runs(
                conn, tenant=tenant, status=wanted, definition_id=definition, limit=limit
            )
    show(as_json, runs, lambda: _runs_table(runs))


def _show_human(doc: dict[str, Any]) -> None:
    run = doc["run"]
    for key in queries.RUN_FIELDS:
        console.print(f"[bold]{key}[/]: {run[key]}")
    step_cols = ["step_path", "step_type", "status", "started_at", "completed_at"]
    console.print(table("steps", step_cols, [[s[c] for c in step_cols] for s in doc["steps"]]))
    wait_cols = ["wait_id", "wait_type", "event_type", "correlation_key", "status"]
    console.print(table("waits", wait_cols, [[w[c] for c in wait_cols] for w in doc["waits"]]))
    log_cols = ["seq", "level", "message", "occurred_at"]
    console.print(table("logs", log_cols, [[g[c] for c in log_cols] for g in doc["logs"]]))


@app.command("show")
def show_(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The run id."),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """One run with its steps, waits and logs."""
    with refusals(as_json), db.reading(database_url(ctx, database)) as conn:
        doc = queries.show_run(conn, run_id)
    show(as_json, doc, lambda: _show_human(doc))


@app.command("wait")
def wait(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The run id."),
    status: str | None = typer.Option(
        None, "--status", help="The status to wait for (default: any terminal status)."
    ),
    timeout: float = typer.Option(..., "--timeout", min=0, help="Seconds to wait at most."),
    interval: float = typer.Option(0.2, "--interval", min=0.01, help="Polling interval (s)."),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """Wait until a run reaches a status; exit 1 if the timeout passes first."""
    with refusals(as_json):
        wanted = _check_status(status)
        eng = db.engine(database_url(ctx, database))
        try:
            with db.database_errors():
                run = queries.wait_for_run(
                    eng, run_id, timeout=timeout, status=wanted, interval=interval
                )
        finally:
            eng.dispose()
    show(as_json, run, lambda: _runs_table([run]))
