"""Workflow definitions (ARCHITECTURE §6): the document model, publish-time
validation with step paths, the canonical hash, and the published-definitions store."""

from workflows.definitions.canonical import canonical_json, definition_hash
from workflows.definitions.model import Definition, definition_json_schema
from workflows.definitions.validate import DefinitionInvalid, Problem, parse, validate

__all__ = [
    "Definition",
    "DefinitionInvalid",
    "Problem",
    "canonical_json",
    "definition_hash",
    "definition_json_schema",
    "parse",
    "validate",
]
