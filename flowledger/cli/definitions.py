"""`flowledger definitions ...`: published workflow definitions. `list` reads the
projection; `validate` and `publish` join this same app."""

from __future__ import annotations

from typing import Any

import typer

from flowledger.cli.output import JSON_FLAG, console, refusals, show, table
from flowledger.cli.runs import DATABASE, database_url
from projections import db, queries

app = typer.Typer(help="Versioned workflow definitions.")


def _human(items: list[dict[str, Any]]) -> None:
    columns = ["tenant", "definition_id", "version", "name", "trigger_event_type", "published_at"]
    rows = [[d[c] for c in columns] + [d["hash"][:12]] for d in items]
    console.print(table(f"definitions ({len(items)})", [*columns, "hash"], rows))


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: str | None = typer.Option(None, "--tenant"),
    limit: int = typer.Option(queries.DEFAULT_LIMIT, "--limit", min=1),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """List published definitions as the projector has seen them."""
    with refusals(as_json), db.reading(database_url(ctx, database)) as conn:
        items = queries.list_definitions(conn, tenant=tenant, limit=limit)
    show(as_json, items, lambda: _human(items))
