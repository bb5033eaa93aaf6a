"""`flowledger processor`: run the ingress processor in the foreground (Ctrl-C stops it
cleanly, committing what is done); `flowledger processor status`: ingress lag."""

from __future__ import annotations

import asyncio

import typer

from flowledger import logs
from flowledger.cli import context
from flowledger.cli.foreground import report, stop_on_signals, tune_gc
from flowledger.cli.output import JSON_FLAG, console, err_console, print_json, refusals, table

app = typer.Typer(
    help="The ingress processor: events -> signals, triggered starts and audit.",
    no_args_is_help=False,
)


@app.callback(invoke_without_command=True)
def processor(
    ctx: typer.Context,
    until_idle: bool = typer.Option(
        False,
        "--until-idle",
        "--once",
        help="Stop once every assigned ingress partition is handled up to its end.",
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0, help="Stop after this many seconds."
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """Run the processor in the foreground (without a subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    from processors.app import Processor

    tune_gc()
    with stop_on_signals() as stop, refusals(as_json):
        settings = context.settings(ctx)
        logs.configure(settings)
        runner = Processor(settings, stop)
        if not as_json:
            err_console.print(
                f"processor: group {settings.processor.group_id}, "
                f"Kafka {settings.kafka.bootstrap_servers}, "
                f"Temporal {settings.temporal.address}"
            )
        stats = asyncio.run(runner.run(until_idle=until_idle, timeout=timeout))
    report(stats, as_json, until_idle, stop)


@app.command("status")
def status(ctx: typer.Context, as_json: bool = JSON_FLAG) -> None:
    """Per-partition lag of the ingress topic for the processor's group (and, when
    routing is partitioned, of the routing topic for the routing group and of the
    runtime topic for the waits relay's group)."""
    from processors.status import lag

    with refusals(as_json):
        report = lag(context.settings(ctx))
    if as_json:
        print_json(report)
        return
    for stage in [report, *(report[name] for name in ("routing", "waits") if name in report)]:
        console.print(
            table(
                f"{stage['topic']} / group {stage['group']} "
                f"(lag {sum(r['lag'] for r in stage['partitions'])})",
                ["partition", "committed", "end offset", "lag"],
                [
                    [r["partition"], r["committed"], r["end_offset"], r["lag"]]
                    for r in stage["partitions"]
                ],
            )
        )
