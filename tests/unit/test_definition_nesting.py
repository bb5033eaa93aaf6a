"""The definition nesting limits: steps in steps (`workflows.max_definition_nesting`)
and JSON levels (`MAX_JSON_DEPTH`), found alike in a parsed document and in a text too
deep to parse, refused before anything recursive meets the document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import flowledger.cli
from flowledger.settings import Settings, WorkflowSettings
from tests.deep_definitions import WRAPPERS, deep, deep_text, json_levels
from workflows.codes import DEFINITION_TOO_DEEP
from workflows.definitions.nesting import MAX_JSON_DEPTH, json_depth, scan_text, step_nesting
from workflows.definitions.validate import (
    CHILD_NAMES,
    STEP_CHILDREN,
    too_deep_text,
    validate,
)

LIMIT = WorkflowSettings().max_definition_nesting
CHILD = {"control.if": "then", "control.if-else": "else", "control.tryCatch": "try"}

if not any(group.name == "definitions" for group in flowledger.cli.app.registered_groups):
    flowledger.cli._register()


def step_path(level: int) -> str:
    """The path deep_text gives the step at `level`."""
    path = "root.steps[0]"
    for above in range(1, level):
        name = CHILD.get(WRAPPERS[(above - 1) % len(WRAPPERS)], "body")
        path += f".{name}.steps[0]"
    return path


def found(document: Any, settings: Settings | None = None) -> list[tuple[str, str]]:
    return [(p.path, p.code) for p in validate(document, settings or Settings())]


def test_the_default_is_documented_and_bounded() -> None:
    assert LIMIT == 32
    assert WorkflowSettings(max_definition_nesting=60).max_definition_nesting == 60
    with pytest.raises(ValidationError):
        WorkflowSettings(max_definition_nesting=61)
    with pytest.raises(ValidationError):
        WorkflowSettings(max_definition_nesting=0)


def test_at_the_limit_is_accepted_one_deeper_is_refused_at_its_step_path() -> None:
    assert found(deep(LIMIT)) == []
    assert found(deep(LIMIT + 1)) == [(step_path(LIMIT + 1), DEFINITION_TOO_DEEP)]


def test_the_limit_follows_the_setting() -> None:
    wider = Settings(workflows=WorkflowSettings(max_definition_nesting=60))
    assert found(deep(60), wider) == []
    assert found(deep(61), wider) == [(step_path(61), DEFINITION_TOO_DEEP)]
    narrow = Settings(workflows=WorkflowSettings(max_definition_nesting=1))
    assert found(deep(1), narrow) == []
    assert found(deep(2), narrow) == [(step_path(2), DEFINITION_TOO_DEEP)]


def test_json_levels_at_the_limit_are_accepted_one_deeper_is_refused() -> None:
    # The innermost step's literal brings the document to exactly MAX_JSON_DEPTH.
    literal = MAX_JSON_DEPTH - (2 * LIMIT + 2)
    at_limit = deep(LIMIT, literal)
    assert json_levels(at_limit) == MAX_JSON_DEPTH
    assert found(at_limit) == []
    deeper = deep(LIMIT, literal + 1)
    assert json_levels(deeper) == MAX_JSON_DEPTH + 1
    innermost = step_path(LIMIT) + ".assign.vars.deep" + ".d" * literal
    assert found(deeper) == [(innermost, DEFINITION_TOO_DEEP)]


@pytest.mark.parametrize(
    ("levels", "literal"),
    [(1, 0), (LIMIT, 0), (LIMIT + 1, 0), (LIMIT, 62), (LIMIT, 63), (40, 80), (10, 120), (200, 0)],
)
def test_the_text_scan_finds_what_the_document_walk_finds(levels: int, literal: int) -> None:
    text = deep_text(levels, literal)
    document = json.loads(text)
    walked = step_nesting(document, LIMIT, STEP_CHILDREN) or json_depth(document, CHILD_NAMES)
    assert scan_text(text, LIMIT, CHILD_NAMES) == walked


def test_the_text_scan_reads_strings_as_strings() -> None:
    document = deep(LIMIT + 1)
    document["name"] = 'brackets [{ and "quotes" \\ in a name'
    document["steps"][0]["id"] = '{"steps": [[['
    text = json.dumps(document)
    walked = step_nesting(document, LIMIT, STEP_CHILDREN)
    assert walked is not None and walked.path == step_path(LIMIT + 1)
    assert scan_text(text, LIMIT, CHILD_NAMES) == walked


def test_five_thousand_levels_in_memory_are_refused_without_recursion() -> None:
    document: dict[str, Any] = {"id": "leaf", "type": "assign", "assign": {"vars.x": 1}}
    for level in range(5000):
        document = {"id": f"if{level}", "type": "control.if", "condition": True, "then": [document]}
    definition = {"id": "d", "version": 1, "tenant": "acme", "name": "n", "steps": [document]}
    problems = found(definition)
    assert problems == [("root.steps[0]" + ".then.steps[0]" * LIMIT, DEFINITION_TOO_DEEP)]


@pytest.mark.parametrize("levels", [LIMIT + 1, 300, 5000])
def test_cli_validate_refuses_with_the_step_path(levels: int, tmp_path: Path) -> None:
    file = tmp_path / "deep.json"
    file.write_text(deep_text(levels), encoding="utf-8")
    result = CliRunner().invoke(
        flowledger.cli.app, ["definitions", "validate", str(file), "--json"]
    )
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "DEFINITION_INVALID"
    assert [(p["path"], p["code"]) for p in error["problems"]] == [
        (step_path(LIMIT + 1), DEFINITION_TOO_DEEP)
    ]


def test_cli_validate_accepts_the_limit(tmp_path: Path) -> None:
    file = tmp_path / "deep.json"
    file.write_text(deep_text(LIMIT, MAX_JSON_DEPTH - (2 * LIMIT + 2)), encoding="utf-8")
    result = CliRunner().invoke(
        flowledger.cli.app, ["definitions", "validate", str(file), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["valid"] is True


def test_a_shallow_text_passes_the_scan_and_a_deep_array_does_not() -> None:
    assert too_deep_text('{"steps": []}') is None
    assert too_deep_text("[" * 600 + "]" * 600) is not None
