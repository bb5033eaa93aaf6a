"""`flowledger publish FILE|-`: one JSON envelope or NDJSON; the valid lines are
published, every refused line is reported with its number and reason."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from flowledger import tracing
from flowledger.cli import context
from flowledger.cli.output import EXIT_REFUSED, JSON_FLAG, console, print_json, refusals, table
from flowledger.codes import FILE_NOT_FOUND, TRACEPARENT_INVALID
from flowledger.errors import InvalidInput
from topics.publisher import Published, publish_text


def publish(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="A file of JSON/NDJSON envelopes, or - for stdin."),
    traceparent: str | None = typer.Option(
        None,
        "--traceparent",
        help="A W3C traceparent the events continue; without it each starts a trace.",
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """Publish events to flowledger.events.v1."""
    with refusals(as_json):
        if traceparent is not None and tracing.span_context_of(traceparent) is None:
            raise InvalidInput(
                f"not a W3C traceparent: {traceparent}",
                code=TRACEPARENT_INVALID,
                field="--traceparent",
            )
        if source == "-":
            text = sys.stdin.read()
        else:
            path = Path(source)
            if not path.is_file():
                raise InvalidInput(f"no such file: {source}", code=FILE_NOT_FOUND, path=source)
            text = path.read_text(encoding="utf-8")
        outcomes = publish_text(context.settings(ctx), text, traceparent=traceparent)
    refused = [o for o in outcomes if not isinstance(o, Published)]
    if as_json:
        print_json([o.as_dict() for o in outcomes])
    else:
        rows = [
            [o.line, o.event_id, o.partition, o.offset, o.trace_id or "", ""]
            if isinstance(o, Published)
            else [o.line, "", "", "", "", f"{o.error.get('code')}: {o.error.get('message')}"]
            for o in outcomes
        ]
        columns = ["line", "event_id", "partition", "offset", "trace_id", "error"]
        console.print(table("publish", columns, rows))
    if refused:
        raise typer.Exit(EXIT_REFUSED)
