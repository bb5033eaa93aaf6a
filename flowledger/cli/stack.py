"""`flowledger stack up|down|status|restart`: the local services on loopback ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flowledger.cli import context
from flowledger.cli.output import (
    JSON_FLAG,
    console,
    err_console,
    print_json,
    refusals,
    table,
)
from flowledger.settings import Settings
from flowledger.stack import launcher, state

app = typer.Typer(help="Start, stop and inspect the local Kafka, Temporal and database.")

StateDir = typer.Option(None, "--state-dir", help="Where the services keep their data.")


def settings_with_state_dir(ctx: typer.Context, state_dir: Path | None) -> Settings:
    base = context.settings(ctx)
    if state_dir is not None:
        base = base.model_copy(
            update={"stack": base.stack.model_copy(update={"state_dir": state_dir})}
        )
        context.replace(ctx, base)
    return base


def _render(document: dict[str, Any], title: str) -> None:
    rows = [
        [
            name,
            info.get("state"),
            info.get("endpoint") or info.get("metrics"),
            info.get("mode", ""),
            info.get("pid"),
        ]
        for name, info in document["services"].items()
    ]
    console.print(table(title, ["service", "state", "endpoint", "mode", "pid"], rows))
    ui = document["services"].get("temporal", {}).get("ui")
    if ui:
        console.print(f"Temporal UI: {ui}")


@app.command("up")
def up(
    ctx: typer.Context,
    state_dir: Path | None = StateDir,
    kafka: str | None = typer.Option(None, "--kafka", help="Attach to this bootstrap server."),
    temporal: str | None = typer.Option(None, "--temporal", help="Attach to this address."),
    database: str | None = typer.Option(
        None, "--database", help="'sqlite' (default), 'postgres', or a SQLAlchemy URL."
    ),
    kafka_brokers: int | None = typer.Option(
        None,
        "--kafka-brokers",
        min=1,
        max=9,
        help="Brokers of our own Kafka: a KRaft cluster on loopback (3: replication 3, "
        "min.insync.replicas 2).",
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """Start the services that are not running (or attach) and wait until they answer."""
    settings = settings_with_state_dir(ctx, state_dir)
    with refusals(as_json):
        before = state.load(settings.stack.state_dir.resolve())
        started = launcher.up(
            settings,
            kafka_bootstrap=kafka,
            temporal_address=temporal,
            database_choice=database,
            kafka_brokers=kafka_brokers,
            progress=None if as_json else (lambda msg: err_console.print(f"[dim]{msg}…[/]")),
        )
    document = launcher.status(settings, check=False)
    document["ready_seconds"] = started.ready_seconds
    document["started"] = launcher.started(before, started)
    if as_json:
        print_json(document)
    else:
        _render(document, "stack up")


@app.command("down")
def down(ctx: typer.Context, state_dir: Path | None = StateDir, as_json: bool = JSON_FLAG) -> None:
    """Stop every service the stack started (graceful, then forced). Idempotent."""
    settings = settings_with_state_dir(ctx, state_dir)
    with refusals(as_json):
        stopped = launcher.down(settings)
    document = launcher.status(settings, check=False)
    document["stopped"] = sorted(stopped.services) if stopped else []
    if as_json:
        print_json(document)
    else:
        console.print("stack stopped" if stopped else "nothing was running")


@app.command("status")
def status(
    ctx: typer.Context, state_dir: Path | None = StateDir, as_json: bool = JSON_FLAG
) -> None:
    """Show each service's state and endpoint, and the metrics URL of each component."""
    from flowledger import services

    settings = settings_with_state_dir(ctx, state_dir)
    document = launcher.status(settings)
    # The components `up` started (processor, worker, ...): their metrics endpoints.
    document["services"].update(services.status(settings))
    if as_json:
        print_json(document)
    else:
        _render(document, "stack status")


@app.command("fetch")
def fetch(ctx: typer.Context, as_json: bool = JSON_FLAG) -> None:
    """Resolve the Apache Kafka jars from Maven Central into the cache (once)."""
    from flowledger.stack import kafka

    settings = context.settings(ctx)
    with refusals(as_json):
        libs = kafka.ensure_jars(settings.stack)
    document = {
        "kafka_version": settings.stack.kafka_version,
        "libs": str(libs),
        "jars": len(list(libs.glob("*.jar"))),
    }
    if as_json:
        print_json(document)
    else:
        console.print(f"Kafka {document['kafka_version']}: {document['jars']} jars in {libs}")


@app.command("restart")
def restart(
    ctx: typer.Context,
    service: str = typer.Argument(..., help="kafka, temporal or database."),
    state_dir: Path | None = StateDir,
    as_json: bool = JSON_FLAG,
) -> None:
    """Restart one service on its ports with its data; the others keep running."""
    settings = settings_with_state_dir(ctx, state_dir)
    with refusals(as_json):
        before = state.load(settings.stack.state_dir.resolve())
        after = launcher.restart(
            settings,
            service,
            progress=None if as_json else (lambda msg: err_console.print(f"[dim]{msg}…[/]")),
        )
    document = launcher.status(settings, check=False)
    document["restarted"] = launcher.started(before, after)
    if as_json:
        print_json(document)
    else:
        _render(document, f"stack restart {service}")
