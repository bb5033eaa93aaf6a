"""`flowledger topics ensure|describe|read`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from flowledger.cli import context
from flowledger.cli.output import JSON_FLAG, console, print_json, refusals, table
from flowledger.errors import InvalidInput
from processors.redrive_rules import parse_time
from topics import admin, reader

app = typer.Typer(help="Create and inspect flowledger's Kafka topics.")


def _render(title: str, reports: list[admin.TopicReport]) -> None:
    rows = [
        [
            r.name,
            r.partitions,
            r.replication_factor if r.replication_factor is not None else "",
            r.status,
            ", ".join(f"{k}={v}" for k, v in sorted(r.config.items())),
            "; ".join(r.differences),
        ]
        for r in reports
    ]
    console.print(
        table(title, ["topic", "partitions", "replicas", "status", "config", "differences"], rows)
    )


@app.command("ensure")
def ensure(ctx: typer.Context, as_json: bool = JSON_FLAG) -> None:
    """Create missing topics; report existing ones whose configuration differs."""
    with refusals(as_json):
        reports = admin.ensure(context.settings(ctx))
    if as_json:
        print_json([r.as_dict() for r in reports])
    else:
        _render("topics ensure", reports)


@app.command("describe")
def describe(ctx: typer.Context, as_json: bool = JSON_FLAG) -> None:
    """List the catalogue's topics with their partitions and configs."""
    with refusals(as_json):
        reports = admin.describe(context.settings(ctx))
    if as_json:
        print_json([r.as_dict() for r in reports])
    else:
        _render("topics", reports)


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    return round(parse_time(text, datetime.now(UTC)).timestamp() * 1000)


@app.command("read")
def read(
    ctx: typer.Context,
    topic: str = typer.Argument(
        "events", help="events, audit, runtime, definitions, deadletter, operators, redrives"
    ),
    partition: int | None = typer.Option(None, "--partition", min=0, help="Only this partition."),
    offset: int | None = typer.Option(
        None, "--offset", min=0, help="From this offset (of every partition read)."
    ),
    from_time: str | None = typer.Option(
        None, "--from-time", help="Records at or after: ISO-8601 or an age (15m, 2h)."
    ),
    to_time: str | None = typer.Option(
        None, "--to-time", help="Records at or before: ISO-8601 or an age (15m, 2h)."
    ),
    headers: bool = typer.Option(False, "--headers", help="Show every record's headers."),
    max_records: int = typer.Option(0, "--max", min=0, help="At most this many records (0: all)."),
    limit: int = typer.Option(0, "--limit", min=0, help="The same as --max."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Read a flowledger topic up to its current end (by assignment: no consumer group is
    left behind)."""
    settings = context.settings(ctx)
    name = settings.topic(f"flowledger.{topic}.v1") if "." not in topic else topic
    with refusals(as_json):
        if offset is not None and from_time is not None:
            raise InvalidInput("give --offset or --from-time, not both", field="--offset")
        span = reader.ReadRange(
            partition, offset, _ms(from_time), _ms(to_time), (max_records or limit) or None
        )
        records = reader.read(settings, name, span)
    if as_json:
        print_json([r.as_dict() for r in records])
        return
    rows = []
    for r in records:
        try:
            value = json.loads(r.value)
            summary = ", ".join(
                f"{k}={value[k]}" for k in ("event_type", "tenant", "type", "run_id") if k in value
            )
            payload = json.dumps(value.get("payload", value.get("data", {})), separators=(",", ":"))
        except (ValueError, AttributeError):
            summary, payload = "(not JSON)", r.value
        reason = r.headers.get("flowledger.reason", "")
        if reason:
            reason = f"{reason}: {r.headers.get('flowledger.error', '')}"
        row = [r.partition, r.offset, r.key, summary, payload[:60], reason]
        if headers:
            row.append("; ".join(f"{k}={v}" for k, v in r.headers.items()))
        rows.append(row)
    columns = ["partition", "offset", "key", "event", "payload", "reason"]
    console.print(
        table(
            f"{name}: {len(records)} records",
            columns + (["headers"] if headers else []),
            rows,
        )
    )
