"""`flowledger definitions validate|publish FILE` and `definitions retire`: the
authoring half of the definitions command group (registered on the `definitions` app
by cli/__init__). Publishing and retiring also bring the definition's Temporal
Schedules in line (workflows/schedules.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, NoReturn

import typer

from flowledger.cli import context, inputs
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
from flowledger.settings import Settings
from schemas.codes import RECORD_TOO_DEEP
from schemas.definition_record import DefinitionRecord
from workflows.definitions.canonical import definition_hash
from workflows.definitions.validate import DefinitionInvalid, too_deep_text
from workflows.definitions.validate import validate as check

FILE_ARGUMENT = typer.Argument(..., help="A definition JSON file.")


def _load(file: Path, settings: Settings) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {file}: {exc}", path=str(file)) from exc
    # NaN and Infinity are refused (they would make the canonical hash impossible);
    # the definition's own nesting rules are the validator's to check.
    try:
        document = inputs.parse(
            text,
            str(file),
            settings.records,
            max_bytes=settings.workflows.max_definition_bytes,
            deep=True,
            path=str(file),
        )
    except InvalidInput as exc:
        # Too deep even to parse: refused like any too-deep definition, at its step path.
        refusal = (
            too_deep_text(text, settings) if exc.context.get("reason") == RECORD_TOO_DEEP else None
        )
        if refusal is not None:
            raise refusal from None
        raise
    if not isinstance(document, dict):
        raise InvalidInput(
            f"{file} must hold a JSON object, not {type(document).__name__}", path=str(file)
        )
    return document


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
        except DefinitionInvalid as exc:
            _refuse_invalid(exc, as_json)
        problems = check(document, context.settings(ctx))
    if problems:
        _refuse_invalid(DefinitionInvalid(problems), as_json)
    body = {
        "valid": True,
        "hash": definition_hash(document),
        "id": document["id"],
        "version": document["version"],
        "tenant": document["tenant"],
    }
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
    # Imported here so `validate` works without loading the Kafka client.
    from workflows.definitions import store

    with refusals(as_json):
        try:
            document = _load(file, context.settings(ctx))
            outcome = store.publish(context.settings(ctx), document)
        except DefinitionInvalid as exc:
            # Ahead of refusals(): people get the problems as a table, not a repr.
            _refuse_invalid(exc, as_json)
        settings = context.settings(ctx)
        records = list(store.published(settings).values())
        ident = (outcome.record.tenant, outcome.record.definition_id)
        mine = [r for r in records if (r.tenant, r.definition_id) == ident]
        synced = _sync_schedules(settings, *ident, records, mine)
    body = outcome.as_dict()
    if synced is not None:
        body["schedules"] = synced
    if as_json:
        print_json(body)
        return
    if outcome.published:
        console.print(
            f"[bold green]published[/] {body['key']} at partition {body['partition']} "
            f"offset {body['offset']} (sha256 {body['hash']})"
        )
    else:
        console.print(
            f"[bold]unchanged[/]: {body['key']} is already published with this content "
            f"(sha256 {body['hash']})"
        )
    if synced is not None:
        console.print("schedules: " + ", ".join(f"{k}={v}" for k, v in synced.items()))


def _sync_schedules(
    settings: Settings,
    tenant: str,
    definition_id: str,
    records: list[DefinitionRecord],
    had: list[DefinitionRecord],
) -> dict[str, Any] | None:
    """Make the definition's Temporal Schedules those of its latest version in
    `records`; None (and Temporal never asked) when none of the versions it `had`
    has a schedule."""
    from workflows.schedule_plan import schedules_of

    if not any(schedules_of(r) for r in had):
        return None
    from workflows import schedules
    from workflows.client import connect

    async def go() -> dict[str, Any]:
        client = await connect(settings)
        report = await schedules.sync_definition(
            settings, client, records, tenant, definition_id, retired=had
        )
        return report.as_dict()

    return asyncio.run(go())


def retire(
    ctx: typer.Context,
    definition_id: str = typer.Argument(..., help="The definition to retire."),
    tenant: str = typer.Option(..., "--tenant"),
    as_json: bool = JSON_FLAG,
) -> None:
    """Remove every version of a definition from the topic and delete its schedules."""
    from workflows.definitions import store

    settings = context.settings(ctx)
    with refusals(as_json):
        gone = store.retire(settings, tenant, definition_id)
        synced = _sync_schedules(settings, tenant, definition_id, [], gone)
    versions = [r.version for r in gone]
    body = {
        "retired": True,
        "tenant": tenant,
        "id": definition_id,
        "versions": versions,
        "schedules": synced,
    }
    if as_json:
        print_json(body)
    else:
        console.print(
            f"[bold]retired[/] {tenant}:{definition_id} (versions "
            f"{', '.join(str(v) for v in versions)})" + (f"; schedules {synced}" if synced else "")
        )
