"""The `flowledger` console script: one module per command group, one settings object
built here and handed to every command through the typer context."""

from __future__ import annotations

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


def main() -> None:
    _register()
    app()
