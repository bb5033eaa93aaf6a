"""`flowledger topics ensure|describe`."""

from __future__ import annotations

import json

import typer

from flowledger.cli import context
from flowledger.cli.output import JSON_FLAG, console, print_json, refusals, table
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


@app.command("read")
def read(
    ctx: typer.Context,
    topic: str = typer.Argument("events", help="events, audit, runtime, definitions, deadletter"),
    limit: int = typer.Option(0, "--limit", help="At most this many records (0: all)."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Read a flowledger topic from the beginning to its current end."""
    settings = context.settings(ctx)
    name = settings.topic(f"flowledger.{topic}.v1") if "." not in topic else topic
    with refusals(as_json):
        records = reader.read_all(settings, name, limit or None)
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
        rows.append([r.partition, r.offset, r.key, summary, payload[:60], reason])
    console.print(
        table(
            f"{name}: {len(records)} records",
            ["partition", "offset", "key", "event", "payload", "reason"],
            rows,
        )
    )
