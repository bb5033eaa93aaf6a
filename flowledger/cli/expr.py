"""`flowledger expr eval|check`: the expression contract from the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from flowledger.cli import context
from flowledger.cli.output import JSON_FLAG, console, print_json, refusals
from flowledger.errors import InvalidInput
from flowledger.operations import json_input as inputs
from flowledger.settings import RecordSettings
from workflows.expressions import compile_with

app = typer.Typer(help="Evaluate and check expressions under the expression contract.")


def _load_input(raw: str | None, file: Path | None, limits: RecordSettings) -> Any:
    if raw is not None and file is not None:
        raise InvalidInput("give --input or --input-file, not both")
    if file is not None:
        try:
            raw = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read --input-file: {exc}", file=str(file)) from None
    if raw is None:
        return {}
    return inputs.parse(raw, "the input", limits)


def _parse_now(raw: str | None) -> datetime:
    if raw is None:
        # The CLI is not workflow code: here "now" may be the machine's clock.
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"--now {raw!r} is not an ISO-8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command("eval")
def eval_(
    ctx: typer.Context,
    expression: str = typer.Argument(..., help='The expression, e.g. "payload.total > 100".'),
    input_json: str | None = typer.Option(
        None, "--input", help="The context as JSON (default {})."
    ),
    input_file: Path | None = typer.Option(
        None, "--input-file", help="Read the context from this JSON file."
    ),
    now: str | None = typer.Option(
        None, "--now", help="The clock for nowIso(), ISO-8601 (default: the current time)."
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """Evaluate EXPRESSION against a context and print its value."""
    with refusals(as_json):
        settings = context.settings(ctx)
        data = _load_input(input_json, input_file, settings.records)
        clock = _parse_now(now)
        compiled = compile_with(expression, settings)
        value = compiled.evaluate(data, clock)
    if as_json:
        print_json({"value": value})
    else:
        console.print_json(json.dumps(value, ensure_ascii=False))


@app.command("check")
def check(
    ctx: typer.Context,
    expression: str = typer.Argument(..., help="The expression to validate."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Parse and validate EXPRESSION without evaluating it."""
    with refusals(as_json):
        compiled = compile_with(expression, context.settings(ctx))
    functions = sorted(compiled.functions)
    if as_json:
        print_json({"valid": True, "functions": functions})
    else:
        console.print("[bold green]valid[/]: allowed functions " + ", ".join(functions))
