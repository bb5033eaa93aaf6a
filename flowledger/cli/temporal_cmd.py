"""`flowledger temporal ensure`: flowledger's search attributes on the configured
Temporal namespace."""

from __future__ import annotations

import asyncio

import typer

from flowledger.cli import context
from flowledger.cli.output import EXIT_CHECK_FAILED, JSON_FLAG, console, print_json, refusals, table

app = typer.Typer(help="flowledger's side of the Temporal cluster.", no_args_is_help=True)


@app.command("ensure")
def ensure(
    ctx: typer.Context,
    check: bool = typer.Option(
        False, "--check", help="Only report; register nothing (exit 1 if anything is missing)."
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """Register missing search attributes; report those whose type differs (exit 1)."""
    from workflows import visibility_admin

    settings = context.settings(ctx)
    with refusals(as_json):
        reports = asyncio.run(visibility_admin.ensure(settings, register=not check))
    ok = all(r.ok for r in reports)
    if as_json:
        print_json(
            {
                "address": settings.temporal.address,
                "namespace": settings.temporal.namespace,
                "ok": ok,
                "attributes": [r.as_dict() for r in reports],
            }
        )
    else:
        where = f"{settings.temporal.namespace} at {settings.temporal.address}"
        console.print(
            table(
                f"search attributes of {where}",
                ["attribute", "type", "found", "status", "error"],
                [[r.name, r.wanted, r.found, r.status, r.error] for r in reports],
            )
        )
    if not ok:
        raise typer.Exit(EXIT_CHECK_FAILED)
