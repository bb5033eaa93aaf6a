"""`flowledger schedules list|describe|pause|unpause|trigger|backfill|reconcile`: the
Temporal Schedules of published definitions, asked of Temporal (the authority).
pause, unpause, trigger and backfill go to the operator audit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import typer
from temporalio.client import Client

from flowledger.cli import context
from flowledger.cli.operators import Request, audited, by_option, default_operator
from flowledger.cli.output import JSON_FLAG, console, print_json, refusals, show, table
from flowledger.errors import InvalidInput
from flowledger.settings import Settings
from schemas.schedule import OVERLAP_POLICIES
from workflows import schedules
from workflows.client import connect

app = typer.Typer(help="Temporal Schedules of published definitions.")

SCHEDULE_ID = typer.Argument(..., help="flowledger:schedule:<tenant>:<definition_id>:<name>")
NOTE = typer.Option(None, "--note", help="Kept on the schedule in Temporal.")
COLUMNS = ["schedule_id", "version", "overlap", "paused", "next_run_at", "last_run_at", "runs"]


def _run(settings: Settings, call: Callable[[Client], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        return await call(await connect(settings))

    return asyncio.run(go())


def _human_list(items: list[dict[str, Any]]) -> None:
    rows = [[item[c] for c in COLUMNS] for item in items]
    console.print(table(f"schedules ({len(items)})", COLUMNS, rows))


def _human_one(item: dict[str, Any]) -> None:
    for key, value in item.items():
        console.print(f"[bold]{key}[/]: {value}")


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: str | None = typer.Option(None, "--tenant"),
    as_json: bool = JSON_FLAG,
) -> None:
    """List the schedules of the published definitions, as Temporal has them."""
    settings = context.settings(ctx)
    with refusals(as_json):
        items = _run(settings, lambda c: schedules.list_schedules(settings, c, tenant))
    show(as_json, items, lambda: _human_list(items))


@app.command("describe")
def describe(ctx: typer.Context, schedule_id: str = SCHEDULE_ID, as_json: bool = JSON_FLAG) -> None:
    """One schedule: its version, timing, overlap, paused state, next and last runs."""
    settings = context.settings(ctx)
    with refusals(as_json):
        item = _run(settings, lambda c: schedules.describe(c, schedule_id))
    show(as_json, item, lambda: _human_one(item))


def _operator(
    settings: Settings,
    action: str,
    schedule_id: str,
    by: str | None,
    as_json: bool,
    call: Callable[[Client, str], Awaitable[dict[str, Any]]],
    details: dict[str, Any] | None = None,
) -> None:
    who = by or default_operator()
    request = Request(action, who, details={"schedule_id": schedule_id, **(details or {})})
    with refusals(as_json), audited(settings, request):
        item = _run(settings, lambda c: call(c, who))
        request.tenant = item.get("tenant")
    if as_json:
        print_json(item)
    else:
        console.print(
            f"{item['action']} {schedule_id}: paused={item['paused']} "
            f"next_run_at={item['next_run_at']}"
        )


@app.command("pause")
def pause(
    ctx: typer.Context,
    schedule_id: str = SCHEDULE_ID,
    note: str | None = NOTE,
    by: str | None = by_option(),
    as_json: bool = JSON_FLAG,
) -> None:
    """Stop the schedule starting runs until unpaused."""
    _set_paused(ctx, schedule_id, note, by, as_json, paused=True)


@app.command("unpause")
def unpause(
    ctx: typer.Context,
    schedule_id: str = SCHEDULE_ID,
    note: str | None = NOTE,
    by: str | None = by_option(),
    as_json: bool = JSON_FLAG,
) -> None:
    """Let a paused schedule start runs again."""
    _set_paused(ctx, schedule_id, note, by, as_json, paused=False)


def _set_paused(
    ctx: typer.Context,
    schedule_id: str,
    note: str | None,
    by: str | None,
    as_json: bool,
    *,
    paused: bool,
) -> None:
    settings = context.settings(ctx)
    change = schedules.pause if paused else schedules.unpause
    _operator(
        settings,
        "schedule_pause" if paused else "schedule_unpause",
        schedule_id,
        by,
        as_json,
        lambda c, who: change(settings, c, schedule_id, note, who),
    )


@app.command("trigger")
def trigger(
    ctx: typer.Context,
    schedule_id: str = SCHEDULE_ID,
    by: str | None = by_option(),
    as_json: bool = JSON_FLAG,
) -> None:
    """Start one run now, under the schedule's overlap policy."""
    settings = context.settings(ctx)
    _operator(
        settings,
        "schedule_trigger",
        schedule_id,
        by,
        as_json,
        lambda c, who: schedules.trigger(settings, c, schedule_id, who),
    )


def _time(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidInput(
            f"{option} must be an ISO-8601 time with an offset, got {value!r}",
            status=400,
            field=option,
        )
    return parsed


@app.command("backfill")
def backfill(
    ctx: typer.Context,
    schedule_id: str = SCHEDULE_ID,
    start: str = typer.Option(..., "--from", help="ISO-8601 start of the window."),
    end: str = typer.Option(..., "--to", help="ISO-8601 end of the window."),
    overlap: str | None = typer.Option(
        None, "--overlap", help=f"For this backfill only: {' | '.join(OVERLAP_POLICIES)}."
    ),
    by: str | None = by_option(),
    as_json: bool = JSON_FLAG,
) -> None:
    """Start the runs the schedule would have started in a past window."""
    settings = context.settings(ctx)

    async def call(client: Client, who: str) -> dict[str, Any]:
        if overlap is not None and overlap not in OVERLAP_POLICIES:
            raise InvalidInput(
                f"--overlap must be one of {', '.join(OVERLAP_POLICIES)}",
                status=400,
                field="--overlap",
            )
        return await schedules.backfill(
            settings,
            client,
            schedule_id,
            _time(start, "--from"),
            _time(end, "--to"),
            who,
            overlap,
        )

    _operator(
        settings,
        "schedule_backfill",
        schedule_id,
        by,
        as_json,
        call,
        {"from": start, "to": end, "overlap": overlap},
    )


@app.command("reconcile")
def reconcile(ctx: typer.Context, as_json: bool = JSON_FLAG) -> None:
    """Make Temporal's schedules match the published definitions (as the reconciler
    does at start) and report what changed."""
    from workflows.definitions import store

    settings = context.settings(ctx)
    with refusals(as_json):
        records = store.published(settings)
        report = _run(settings, lambda c: schedules.reconcile(settings, c, records.values()))
    body = report.as_dict()
    if as_json:
        print_json(body)
    else:
        console.print(", ".join(f"{k}={v}" for k, v in body.items()))
