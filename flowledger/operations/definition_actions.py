"""Checking and publishing a definition given as JSON text, the same for a file named
on the command line and a request body posted to the API."""

from __future__ import annotations

from typing import Any

from flowledger.errors import InvalidInput
from flowledger.operations import json_input
from flowledger.settings import Settings
from schemas.codes import RECORD_TOO_DEEP
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
    """`definitions publish --json`: validated, then put on flowledger.definitions.v1."""
    # Imported here so validating never loads the Kafka client.
    from workflows.definitions import store

    return store.publish(settings, document).as_dict()
