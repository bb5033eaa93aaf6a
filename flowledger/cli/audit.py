"""`flowledger audit list`: the ingress audit, one row per ingested event."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from flowledger.cli.output import JSON_FLAG, console, refusals, show, table
from flowledger.cli.runs import DATABASE, database_url
from projections import db, queries

app = typer.Typer(help="The audit of every event the processor ingested.")


class AuditStatus(StrEnum):
    matched = "matched"
    unmatched = "unmatched"
    expired = "expired"
    error = "error"


def _human(items: list[dict[str, Any]]) -> None:
    columns = ["event_id", "tenant", "event_type", "correlation_key", "status", "error_code"]
    rows = [[a[c] for c in columns] + [len(a["deliveries"]), a["received_at"]] for a in items]
    console.print(table(f"audit ({len(items)})", [*columns, "deliveries", "received_at"], rows))


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: str | None = typer.Option(None, "--tenant"),
    event_type: str | None = typer.Option(None, "--event-type"),
    correlation_key: str | None = typer.Option(None, "--correlation-key"),
    status: AuditStatus | None = typer.Option(
        None,
        "--status",
        help="matched: delivered to or started a run; unmatched: no delivery; expired: "
        "held for the early-event window and taken by no wait; error: the processor "
        "reported an error code.",
    ),
    limit: int = typer.Option(queries.DEFAULT_LIMIT, "--limit", min=1),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """List audited events, oldest first."""
    with refusals(as_json), db.reading(database_url(ctx, database)) as conn:
        items = queries.list_audit(
            conn,
            tenant=tenant,
            event_type=event_type,
            correlation_key=correlation_key,
            status=status.value if status is not None else None,
            limit=limit,
        )
    show(as_json, items, lambda: _human(items))
