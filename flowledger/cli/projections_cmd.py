"""`flowledger projections wait|status|errors`: how far the projection tables are
behind the log, read-your-writes for scripts (wait until what was on the topics when
the command started has been applied), and the records the projector refused."""

from __future__ import annotations

import time
from typing import Any

import typer

from flowledger.cli import context
from flowledger.cli.output import (
    JSON_FLAG,
    console,
    print_json,
    refusals,
    refuse,
    table,
)
from flowledger.cli.runs import DATABASE, database_url
from flowledger.codes import PROJECTION_WAIT_TIMEOUT
from flowledger.errors import CheckFailed, InvalidInput
from projections import db, queries

app = typer.Typer(help="The projector's progress: checkpoints against the topics' ends.")


class ProjectionWaitTimeout(CheckFailed):
    code = PROJECTION_WAIT_TIMEOUT


def _lag_table(title: str, rows: list[dict[str, Any]]) -> None:
    columns = ["topic", "partition", "next_offset", "end_offset", "lag"]
    if rows and "errors" in rows[0]:
        columns.append("errors")
    console.print(table(title, columns, [[row[c] for c in columns] for row in rows]))


@app.command("status")
def status(
    ctx: typer.Context,
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """Per-partition lag: stored checkpoint, end offset, records not yet applied, records refused.

    The refused records themselves are listed by `projections errors`."""
    from projections import lag

    settings = context.settings(ctx)
    with refusals(as_json):
        eng = db.engine(database_url(ctx, database))
        try:
            with db.database_errors():
                rows = lag.lag(settings, eng)
                with db.read_connection(eng) as conn:
                    refused = queries.projection_error_counts(conn)
        finally:
            eng.dispose()
    for row in rows:
        row["errors"] = refused.get((row["topic"], row["partition"]), 0)
    if as_json:
        print_json(rows)
        return
    total = sum(refused.values())
    _lag_table(f"projection lag (total {sum(r['lag'] for r in rows)})", rows)
    console.print(
        f"{total} record(s) refused by the projector"
        + (": see `flowledger projections errors`" if total else "")
    )


@app.command("errors")
def errors(
    ctx: typer.Context,
    limit: int = typer.Option(queries.DEFAULT_LIMIT, "--limit", min=1),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """The records the projector refused: where, why and when."""
    with refusals(as_json), db.reading(database_url(ctx, database)) as conn:
        items = queries.projection_errors(conn, limit=limit)
    if as_json:
        print_json(items)
        return
    columns = ["topic", "partition", "offset", "code", "message", "when"]
    rows = [[i[c] if c != "message" else str(i[c])[:100] for c in columns] for i in items]
    console.print(table(f"projection errors ({len(items)})", columns, rows))


@app.command("wait")
def wait(
    ctx: typer.Context,
    until_caught_up: bool = typer.Option(
        False,
        "--until-caught-up",
        help="Wait until the checkpoints reach the topics' end offsets as of now.",
    ),
    timeout: float = typer.Option(60.0, "--timeout", min=0, help="Seconds to wait at most."),
    interval: float = typer.Option(0.2, "--interval", min=0.01, help="Polling interval (s)."),
    database: str | None = DATABASE,
    as_json: bool = JSON_FLAG,
) -> None:
    """Return once the projection has applied everything on the topics when the command
    started; exit 1 if the timeout passes first."""
    from projections import lag

    settings = context.settings(ctx)
    started = time.monotonic()
    with refusals(as_json):
        if not until_caught_up:
            # The only condition there is; asked for explicitly so that a later one
            # (e.g. --until-offset) cannot change what a bare `wait` means.
            raise InvalidInput("say what to wait for: --until-caught-up", field="--until-caught-up")
        eng = db.engine(database_url(ctx, database))
        try:
            with db.database_errors():
                done, rows = lag.wait(settings, eng, timeout, interval=interval)
        finally:
            eng.dispose()
        waited = round(time.monotonic() - started, 3)
        if not done:
            behind = [r for r in rows if r["lag"]]
            timed_out = ProjectionWaitTimeout(
                f"the projection did not catch up within {timeout}s",
                lag=sum(r["lag"] for r in behind),
                waited_s=waited,
                partitions=behind,
            )
            refuse(timed_out, as_json)
    if as_json:
        print_json({"caught_up": True, "waited_s": waited, "partitions": rows})
    else:
        console.print(f"caught up after {waited}s ({len(rows)} partitions)")
