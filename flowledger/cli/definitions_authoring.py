"""`flowledger definitions validate|publish FILE` and `definitions retire`: the
authoring half of the definitions command group (registered on the `definitions` app
by cli/__init__)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer

from flowledger.cli import context
from flowledger.cli.output import (
    EXIT_REFUSED,
    JSON_FLAG,
    console,
    err_console,
    print_json,
    refusals,
    table,
)
from flowledger.errors import InvalidInput
from flowledger.operations import definition_actions
from flowledger.settings import Settings
from workflows.definitions.validate import DefinitionInvalid

FILE_ARGUMENT = typer.Argument(..., help="A definition JSON file.")


def _load(file: Path, settings: Settings) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {file}: {exc}", path=str(file)) from exc
    return definition_actions.parse(text, str(file), settings)


def _print_problems(error: DefinitionInvalid) -> None:
    rows = [[p.path, p.code, p.message] for p in error.problems]
    err_console.print(table(f"{len(rows)} problem(s)", ["path", "code", "message"], rows))
    err_console.print(f"[bold red]{error.code}[/]: the definition was refused")


def _refuse_invalid(error: DefinitionInvalid, as_json: bool) -> NoReturn:
    if as_json:
        print_json({"error": error.to_dict()})
    else:
        _print_problems(error)
    raise typer.Exit(EXIT_REFUSED)


def validate(
    ctx: typer.Context,
    file: Path = FILE_ARGUMENT,
    as_json: bool = JSON_FLAG,
) -> None:
    """Check a definition and list every problem with its step path."""
    with refusals(as_json):
        try:
            document = _load(file, context.settings(ctx))
            body = definition_actions.validate(document, context.settings(ctx))
        except DefinitionInvalid as exc:
            _refuse_invalid(exc, as_json)
    if as_json:
        print_json(body)
    else:
        console.print(
            f"[bold green]valid[/]: {body['tenant']}:{body['id']} version {body['version']} "
            f"(sha256 {body['hash']})"
        )


def publish(
    ctx: typer.Context,
    file: Path = FILE_ARGUMENT,
    as_json: bool = JSON_FLAG,
) -> None:
    """Validate a definition and publish it to flowledger.definitions.v1."""
    with refusals(as_json):
        try:
            document = _load(file, context.settings(ctx))
            body = definition_actions.publish(document, context.settings(ctx))
        except DefinitionInvalid as exc:
            # Ahead of refusals(): people get the problems as a table, not a repr.
            _refuse_invalid(exc, as_json)
    if as_json:
        print_json(body)
        return
    if body["published"]:
        console.print(
            f"[bold green]published[/] {body['key']} at partition {body['partition']} "
            f"offset {body['offset']} (sha256 {body['hash']})"
        )
    else:
        console.print(
            f"[bold]unchanged[/]: {body['key']} is already published with this content "
            f"(sha256 {body['hash']})"
        )
    synced = body.get("schedules")
    if synced is not None:
        console.print("schedules: " + ", ".join(f"{k}={v}" for k, v in synced.items()))


def retire(
    ctx: typer.Context,
    definition_id: str = typer.Argument(..., help="The definition to retire."),
    tenant: str = typer.Option(..., "--tenant"),
    as_json: bool = JSON_FLAG,
) -> None:
    """Remove every version of a definition from the topic and delete its schedules."""
    with refusals(as_json):
        body = definition_actions.retire(context.settings(ctx), tenant, definition_id)
    if as_json:
        print_json(body)
    else:
        synced = body["schedules"]
        console.print(
            f"[bold]retired[/] {tenant}:{definition_id} (versions "
            f"{', '.join(str(v) for v in body['versions'])})"
            + (f"; schedules {synced}" if synced else "")
        )
