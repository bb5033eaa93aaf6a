"""The operator audit from the command line: `--by`, the recording of every
run-control request (accepted or refused), and `audit operators`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from flowledger.cli.output import JSON_FLAG, console, err_console, refusals, show, table
from flowledger.cli.runs import DATABASE, database_url
from flowledger.errors import FlowledgerError
from flowledger.operations import audit_trail
from flowledger.operations.audit_trail import Request, default_operator
from flowledger.settings import Settings
from projections import db, queries

__all__ = ["Request", "audited", "by_option", "default_operator", "operators"]


def by_option(help_text: str = "Who makes the request (recorded in the operator audit).") -> Any:
    return typer.Option(None, "--by", help=f"{help_text} Default: the OS user.")


def _unrecorded(exc: FlowledgerError) -> None:
    err_console.print(f"[yellow]operator audit not recorded[/]: {exc.code}: {exc.message}")


@contextmanager
def audited(settings: Settings, request: Request) -> Iterator[Request]:
    """The shared operator audit (flowledger.operations.audit_trail), warning on stderr
    when Kafka does not take the record; the CLI's own exit is not an outcome."""
    with audit_trail.audited(
        settings, request, passthrough=(typer.Exit,), unrecorded=_unrecorded
    ) as current:
        yield current


def _human(items: list[dict[str, Any]]) -> None:
    columns = ["requested_at", "action", "outcome", "code", "requested_by", "run_id", "reason"]
    rows = [[item[c] for c in columns] for item in items]
    console.print(table(f"operator actions ({len(items)})", columns, rows))


def operators(
    ctx: typer.Context,
    tenant: str | None = typer.Option(None, "--tenant"),
    run_id: str | None = typer.Option(None, "--run", help="Only this run's requests."),
    action: str | None = typer.Option(None, "--action", help="start, cancel, terminate, ..."),
    outcome: str | None = typer.Option(None, "--outcome", help="accepted or refused."),
    limit: int = typer.Option(queries.DEFAULT_LIMIT, "--limit", min=1),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """List the run-control requests operators made, oldest first."""
    with refusals(as_json), db.reading(database_url(ctx, database)) as conn:
        items = queries.list_operator_actions(
            conn, tenant=tenant, run_id=run_id, action=action, outcome=outcome, limit=limit
        )
    show(as_json, items, lambda: _human(items))
