"""Every public expression vector, through the Python API and through the CLI."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flowledger.cli
from workflows.expressions import ExpressionError, evaluate

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "expressions.json").read_text(encoding="utf-8")
)
NOW: str = VECTORS["now"]
CASES: list[dict[str, Any]] = VECTORS["cases"]
# Settings come from FLOWLEDGER_* variables; the vectors assume the defaults.
CLEAN_ENV: dict[str, str | None] = {
    "FLOWLEDGER_EXPRESSIONS__EXTRA_FUNCTIONS": None,
    "FLOWLEDGER_EXPRESSIONS__STEP_BUDGET": None,
    "FLOWLEDGER_EXPRESSIONS__MAX_OUTPUT_CHARS": None,
}

# Other test modules may have registered the command modules already.
if not any(group.name == "expr" for group in flowledger.cli.app.registered_groups):
    flowledger.cli._register()


def _ids(case: dict[str, Any]) -> str:
    return str(case["name"])


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_api(case: dict[str, Any]) -> None:
    clock = datetime.fromisoformat(NOW)
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(ExpressionError) as caught:
            evaluate(case["expr"], case["input"], clock)
        assert caught.value.code == expect["error"]
        assert caught.value.category == "ExpressionError"
        assert caught.value.message
    else:
        assert evaluate(case["expr"], case["input"], clock) == expect["value"]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_cli(case: dict[str, Any]) -> None:
    args = ["expr", "eval", case["expr"], "--input", json.dumps(case["input"])]
    args += ["--now", NOW, "--json"]
    result = CliRunner().invoke(flowledger.cli.app, args, env=CLEAN_ENV)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    document = json.loads(lines[0])
    expect = case["expect"]
    if "error" in expect:
        assert result.exit_code == 2
        assert set(document) == {"error"}
        assert document["error"]["code"] == expect["error"]
        assert isinstance(document["error"]["message"], str)
    else:
        assert result.exit_code == 0
        assert document == {"value": expect["value"]}
