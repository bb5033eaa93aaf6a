"""The `flowledger` console script: one module per command group, one settings object
built here and handed to every command through the typer context."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import typer

from flowledger.cli import context as _context

app = typer.Typer(
    name="flowledger",
    help="Kafka-native workflow runtime with event-sourced SQL projections.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(ctx: typer.Context) -> None:
    _context.install(ctx)


def _register() -> None:
    # Imported here, not at module top, so `flowledger --help` stays cheap and
    # no command module is imported before the settings exist.
    from flowledger.cli import correlate, expr, publish, schemas_cmd, stack, topics

    app.add_typer(stack.app, name="stack")
    app.add_typer(topics.app, name="topics")
    app.add_typer(schemas_cmd.app, name="schemas")
    app.add_typer(expr.app, name="expr")
    app.command("publish")(publish.publish)
    app.command("correlate")(correlate.correlate)
    from flowledger.cli import audit, definitions, projector_cmd, runs, tasks, waits

    app.add_typer(runs.app, name="runs")
    app.add_typer(waits.app, name="waits")
    app.add_typer(tasks.app, name="tasks")
    app.add_typer(audit.app, name="audit")
    app.add_typer(definitions.app, name="definitions")
    from flowledger.cli import definitions_authoring

    definitions.app.command("validate")(definitions_authoring.validate)
    definitions.app.command("publish")(definitions_authoring.publish)
    definitions.app.command("retire")(definitions_authoring.retire)
    from flowledger.cli import schedules

    app.add_typer(schedules.app, name="schedules")
    app.command("projector")(projector_cmd.projector)
    from flowledger.cli import run_control

    run_control.register(runs.app)
    from flowledger.cli import task_control

    tasks.app.command("complete")(task_control.complete)
    from flowledger.cli import replay_cmd

    app.add_typer(replay_cmd.app, name="replay")
    audit.app.command("why")(replay_cmd.why)
    app.command("worker")(run_control.worker)
    app.command("reconciler")(run_control.reconciler)
    from flowledger.cli import operators

    audit.app.command("operators")(operators.operators)
    from flowledger.cli import processor_cmd

    app.add_typer(processor_cmd.app, name="processor")
    from flowledger.cli import projections_cmd

    app.add_typer(projections_cmd.app, name="projections")
    from flowledger.cli import temporal_cmd

    app.add_typer(temporal_cmd.app, name="temporal")
    from flowledger.cli import deadletters

    app.add_typer(deadletters.app, name="deadletters")
    from flowledger.cli import api_cmd

    app.add_typer(api_cmd.app, name="api")
    from flowledger.cli import up

    app.command("up")(up.up)
    app.command("restart")(up.restart)
    app.command("down")(up.down)


def main() -> None:
    _register()
    try:
        app()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    _leave(code or 0)


def _leave(code: int) -> NoReturn:
    """Exit without interpreter finalization. The Temporal SDK's and librdkafka's
    native threads may still call into Python while it tears down, which aborts the
    process ("PyGILState_Release ... must be current", exit 134) after the command has
    done its work and printed its answer. Every command has closed what it opened by
    now, so only the streams are left to flush."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
