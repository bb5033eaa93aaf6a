"""`flowledger projector`: run the projector in the foreground."""

from __future__ import annotations

import typer

from flowledger import logs
from flowledger.cli import context
from flowledger.cli.foreground import report, stop_on_signals, tune_gc
from flowledger.cli.output import JSON_FLAG, console, refusals
from flowledger.cli.runs import DATABASE


def projector(
    ctx: typer.Context,
    database: str | None = DATABASE,
    until_idle: bool = typer.Option(
        False,
        "--until-idle",
        "--once",
        help="Stop once every assigned partition is applied up to its end.",
    ),
    timeout: float = typer.Option(
        300.0, "--timeout", min=0, help="With --until-idle: give up after this many seconds."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    session_timeout_ms: int | None = typer.Option(
        None,
        "--session-timeout-ms",
        min=1,
        help="Consumer session timeout: how soon the group gives a dead instance's "
        "partitions to the others (the broker's group.min.session.timeout.ms bounds it).",
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """Fold the runtime, audit and definitions topics into the projection tables."""
    from projections.projector import Projector

    tune_gc()
    overrides = {} if session_timeout_ms is None else {"session.timeout.ms": session_timeout_ms}

    with stop_on_signals() as stop, refusals(as_json):
        logs.configure(context.settings(ctx))
        runner = Projector(
            context.settings(ctx),
            database_url=database,
            batch_size=batch_size,
            consumer_config=overrides,
        )
        metrics = runner.serve()
        if not as_json:
            console.print(
                f"projector: group {runner.group_id}, batch {runner.batch_size}, "
                f"database {runner.engine.url.render_as_string(hide_password=True)}"
                + (f", metrics {metrics}" if metrics else "")
            )
        stats = runner.run_until_idle(timeout, stop) if until_idle else runner.run(stop)
    report(stats, as_json, until_idle, stop)
