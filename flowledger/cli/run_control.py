"""`flowledger runs start|cancel|terminate|resume|retry|requeue|rerun` and `flowledger
worker`. Every run-control request goes through flowledger.operations.run_actions, the
same code as the API's, and into the operator audit."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import typer

from flowledger import logs
from flowledger.cli import context
from flowledger.cli.foreground import tune_gc
from flowledger.cli.operators import by_option, default_operator
from flowledger.cli.output import JSON_FLAG, console, err_console, print_json, refusals
from flowledger.errors import InvalidInput
from flowledger.operations import json_input as inputs
from flowledger.operations import run_actions
from flowledger.settings import Settings
from projections import migrate
from workflows import control
from workflows.client import connect
from workflows.reconciler import run_reconciler
from workflows.worker import run_worker

REASON = typer.Option(..., "--reason", help="Why (recorded with the request).")


def _report(as_json: bool, document: dict[str, Any]) -> None:
    if as_json:
        print_json(document)
    else:
        console.print(", ".join(f"{k}={v}" for k, v in document.items() if v is not None))


def start(
    ctx: typer.Context,
    definition_id: str = typer.Argument(..., help="The definition to run."),
    tenant: str = typer.Option(..., "--tenant"),
    input_json: str = typer.Option("{}", "--input", help="The run input as a JSON object."),
    version: int | None = typer.Option(None, "--version", help="Pin a version (else latest)."),
    by: str | None = by_option(),
    as_json: bool = JSON_FLAG,
) -> None:
    """Start a run of a published definition."""
    settings = context.settings(ctx)
    with refusals(as_json):
        data = inputs.parse(input_json, "--input", settings.records, field="--input")
        if not isinstance(data, dict):
            raise InvalidInput("--input must be a JSON object", field="--input")
        document = run_actions.start_run(
            settings,
            tenant=tenant,
            definition_id=definition_id,
            data=data,
            version=version,
            requested_by=by or default_operator(),
            passthrough=(typer.Exit,),
        )
    _report(as_json, document)


def _command(action: str, doc: str) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        run_id: str = typer.Argument(..., help="The run."),
        reason: str = REASON,
        by: str | None = by_option(),
        as_json: bool = JSON_FLAG,
    ) -> None:
        settings = context.settings(ctx)
        with refusals(as_json):
            document = run_actions.control_run(
                settings,
                action,
                run_id,
                reason=reason,
                requested_by=by or default_operator(),
                passthrough=(typer.Exit,),
            )
        _report(as_json, document)

    command.__doc__ = doc
    return command


def register(runs_app: typer.Typer) -> None:
    runs_app.command("start")(start)
    runs_app.command("cancel")(
        _command("cancel", "Ask Temporal to cancel a run; it turns CANCELED once stopped.")
    )
    runs_app.command("terminate")(
        _command(
            "terminate",
            "Ask Temporal to terminate a run (no workflow code runs); it turns TERMINATED.",
        )
    )
    runs_app.command("rerun")(
        _command("rerun", "Start a new run with the original input on the pinned version.")
    )
    for action, hint in control.UNSUPPORTED_HINTS.items():
        runs_app.command(action)(_command(action, f"Refused (409): {hint}."))


def _until_signalled(
    settings: Settings, name: str, body: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """A Temporal-side component in the foreground, until SIGINT or SIGTERM."""
    logs.configure(settings)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        err_console.print(
            f"{name} on {settings.temporal.address}, task queue {settings.temporal.task_queue}"
        )
        await body(stop)

    with refusals(False):
        asyncio.run(go())


def _announce(name: str) -> Callable[[str], None]:
    return lambda url: err_console.print(f"{name} metrics on {url}")


def worker(ctx: typer.Context) -> None:
    """Run the Temporal worker in the foreground (Ctrl-C stops it cleanly)."""
    settings = context.settings(ctx)
    tune_gc()

    async def body(stop: asyncio.Event) -> None:
        # The worker writes the action ledger, one of the migrated tables, and may
        # start before any projector has created them.
        await asyncio.to_thread(migrate.upgrade, settings.database_url())
        await run_worker(settings, stop, _announce("worker"))

    _until_signalled(settings, "worker", body)


def reconciler(ctx: typer.Context) -> None:
    """Publish Temporal's verdict on runs it closed on its own; reconcile schedules at start.

    At start it makes Temporal's schedules match the published definitions (and logs
    what it changed); on every poll it records the schedules' next and last run times."""
    settings = context.settings(ctx)

    async def body(stop: asyncio.Event) -> None:
        await run_reconciler(settings, await connect(settings), stop, _announce("reconciler"))

    _until_signalled(settings, "reconciler", body)
