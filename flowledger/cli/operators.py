"""The operator audit from the command line: `--by`, the recording of every
run-control request (accepted or refused), and `audit operators`."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import typer

from flowledger.cli.output import JSON_FLAG, console, err_console, refusals, show, table
from flowledger.cli.runs import DATABASE, database_url
from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from projections import db, lookups, queries
from schemas.operator import OperatorAction
from topics import operator_log


def default_operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


def by_option(help_text: str = "Who makes the request (recorded in the operator audit).") -> Any:
    return typer.Option(None, "--by", help=f"{help_text} Default: the OS user.")


@dataclass
class Request:
    """One request being made; the command fills in what it learns on the way."""

    action: str
    requested_by: str
    reason: str | None = None
    tenant: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    requested_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@contextmanager
def audited(settings: Settings, request: Request) -> Iterator[Request]:
    """Record ``request`` with its outcome once the body is done: accepted, or refused
    with the error's code. The command's own answer and exit code stay what they are;
    an audit record Kafka would not take is reported on stderr."""
    try:
        yield request
    except FlowledgerError as exc:
        _write(settings, request, "refused", exc.code, exc.message)
        raise
    except Exception as exc:
        # Not an answer the command knows (a bug, an SDK error): still a request made.
        if not isinstance(exc, typer.Exit):
            _write(settings, request, "refused", type(exc).__name__, str(exc))
        raise
    _write(settings, request, "accepted", None, None)


def _write(
    settings: Settings, request: Request, outcome: str, code: str | None, message: str | None
) -> None:
    if request.tenant is None and request.run_id is not None:
        request.tenant = lookups.tenant_of(settings.database_url(), request.run_id)
    record = OperatorAction(
        action_id=uuid.uuid4(),
        action=request.action,
        requested_by=request.requested_by,
        requested_at=request.requested_at,
        outcome=outcome,
        tenant=request.tenant,
        run_id=request.run_id,
        task_id=request.task_id,
        reason=request.reason,
        code=code,
        message=message,
        details=request.details,
    )
    try:
        operator_log.record(settings, record)
    except FlowledgerError as exc:
        err_console.print(f"[yellow]operator audit not recorded[/]: {exc.code}: {exc.message}")


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
