"""Temporal visibility of flowledger runs: the custom search attributes every run
carries (set at start, the correlation keys upserted by the workflow as its event
waits open and close) and the static summary the Temporal UI shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from temporalio.common import (
    SearchAttributeIndexedValueType,
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from workflows.messages import RunInput

TENANT: Final = SearchAttributeKey.for_keyword("FlowledgerTenant")
DEFINITION_ID: Final = SearchAttributeKey.for_keyword("FlowledgerDefinitionId")
DEFINITION_VERSION: Final = SearchAttributeKey.for_int("FlowledgerDefinitionVersion")
TRIGGER_EVENT_ID: Final = SearchAttributeKey.for_keyword("FlowledgerTriggerEventId")
CORRELATION_KEYS: Final = SearchAttributeKey.for_keyword_list("FlowledgerCorrelationKeys")

# Name -> the type the cluster must index it as; `temporal ensure` and the local stack
# register exactly these.
ATTRIBUTES: Final[dict[str, SearchAttributeIndexedValueType]] = {
    key.name: key.indexed_value_type
    for key in (TENANT, DEFINITION_ID, DEFINITION_VERSION, TRIGGER_EVENT_ID, CORRELATION_KEYS)
}

# The names the `temporal` CLI's --search-attribute NAME=TYPE takes.
CLI_TYPES: Final[dict[SearchAttributeIndexedValueType, str]] = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
}


def start_attributes(run: RunInput) -> TypedSearchAttributes | None:
    """What a run is started with; None when the cluster is not known to have the
    attributes (RunOptions.search_attributes off), since Temporal refuses a start that
    names an unregistered one."""
    if not run.options.search_attributes:
        return None
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(TENANT, run.tenant),
        SearchAttributePair(DEFINITION_ID, run.definition_id),
        SearchAttributePair(DEFINITION_VERSION, run.version),
    ]
    if run.trigger_event_id:
        pairs.append(SearchAttributePair(TRIGGER_EVENT_ID, run.trigger_event_id))
    return TypedSearchAttributes(pairs)


def static_summary(run: RunInput) -> str:
    """One line for the Temporal UI: the definition's name and the tenant."""
    name = run.definition.get("name") or run.definition_id
    return f"{name} (v{run.version}) · tenant {run.tenant}"


def correlation_keys_update(keys: Sequence[str]) -> SearchAttributeUpdate[Sequence[str]]:
    """The keys of the open event waits; none unsets the attribute."""
    if not keys:
        return CORRELATION_KEYS.value_unset()
    return CORRELATION_KEYS.value_set(list(keys))
