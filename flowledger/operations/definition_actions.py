"""Checking, publishing and retiring a definition given as JSON text, the same for a
file named on the command line and a request body posted to the API. Publishing and
retiring also bring the definition's Temporal Schedules in line (workflows/schedules.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from flowledger.errors import InvalidInput
from flowledger.operations import json_input
from flowledger.settings import Settings
from schemas.codes import RECORD_TOO_DEEP
from schemas.definition_record import DefinitionRecord
from workflows.definitions.canonical import definition_hash
from workflows.definitions.validate import DefinitionInvalid, too_deep_text
from workflows.definitions.validate import validate as check


def parse(text: str | bytes, source: str, settings: Settings) -> dict[str, Any]:
    """The definition document; raises InvalidInput, or DefinitionInvalid for one too
    deep even to parse (refused like any too-deep definition, at its step path)."""
    # NaN and Infinity are refused (they would make the canonical hash impossible);
    # the definition's own nesting rules are the validator's to check.
    try:
        document = json_input.parse(
            text,
            source,
            settings.records,
            max_bytes=settings.workflows.max_definition_bytes,
            deep=True,
            path=source,
        )
    except InvalidInput as exc:
        if exc.context.get("reason") == RECORD_TOO_DEEP:
            as_text = text if isinstance(text, str) else text.decode("utf-8", "replace")
            refusal = too_deep_text(as_text, settings)
            if refusal is not None:
                raise refusal from None
        raise
    if not isinstance(document, dict):
        raise InvalidInput(
            f"{source} must hold a JSON object, not {type(document).__name__}", path=source
        )
    return document


def validate(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """`definitions validate --json`: the hash and identity, or DefinitionInvalid."""
    problems = check(document, settings)
    if problems:
        raise DefinitionInvalid(problems)
    return {
        "valid": True,
        "hash": definition_hash(document),
        "id": document["id"],
        "version": document["version"],
        "tenant": document["tenant"],
    }


def publish(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """`definitions publish --json`: validated, then put on flowledger.definitions.v1,
    and the definition's Temporal Schedules made those of its latest version (under
    `schedules`, when some version has one)."""
    # Imported here so validating never loads the Kafka client.
    from workflows.definitions import store

    # Before validation, which refused any `at` already past: a one-time schedule
    # whose time comes after this and passes before Temporal holds the schedule is
    # started once. An identical version published again starts nothing: its
    # schedule may have run and been deleted since.
    began = datetime.now(UTC)
    outcome = store.publish(settings, document)
    records = list(store.published(settings).values())
    ident = (outcome.record.tenant, outcome.record.definition_id)
    mine = [r for r in records if (r.tenant, r.definition_id) == ident]
    since = began if outcome.published else None
    synced = sync_schedules(settings, *ident, records, mine, since)
    body = outcome.as_dict()
    if synced is not None:
        body["schedules"] = synced
    return body


def retire(settings: Settings, tenant: str, definition_id: str) -> dict[str, Any]:
    """`definitions retire --json`: every version tombstoned, its schedules deleted."""
    from workflows.definitions import store

    gone = store.retire(settings, tenant, definition_id)
    synced = sync_schedules(settings, tenant, definition_id, [], gone)
    return {
        "retired": True,
        "tenant": tenant,
        "id": definition_id,
        "versions": [r.version for r in gone],
        "schedules": synced,
    }


def sync_schedules(
    settings: Settings,
    tenant: str,
    definition_id: str,
    records: list[DefinitionRecord],
    had: list[DefinitionRecord],
    catch_up_since: datetime | None = None,
) -> dict[str, Any] | None:
    """Make the definition's Temporal Schedules those of its latest version in
    `records`; None (and Temporal never asked) when none of the versions it `had`
    has a schedule. `catch_up_since`: schedules.sync_definition's."""
    from workflows.schedule_plan import schedules_of

    if not any(schedules_of(r) for r in had):
        return None
    from workflows import schedules
    from workflows.client import connect

    async def go() -> dict[str, Any]:
        client = await connect(settings)
        report = await schedules.sync_definition(
            settings,
            client,
            records,
            tenant,
            definition_id,
            retired=had,
            catch_up_since=catch_up_since,
        )
        return report.as_dict()

    return asyncio.run(go())
