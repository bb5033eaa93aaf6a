"""Every public event-wait filter vector: the matcher the workflow applies, and the
publish-time check through `flowledger definitions validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flowledger.cli
from schemas.runtime import FILTER_OPS
from workflows.definitions.validate import validate
from workflows.filters import matches

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "filters.json").read_text(encoding="utf-8")
)
CASES: list[dict[str, Any]] = VECTORS["cases"]
MATCH_CASES = [case for case in CASES if "match" in case["expect"]]

# Other test modules may have registered the command modules already.
if not any(group.name == "expr" for group in flowledger.cli.app.registered_groups):
    flowledger.cli._register()


def _ids(case: dict[str, Any]) -> str:
    return str(case["name"])


def waiting_on(flt: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "filter-vector",
        "version": 1,
        "tenant": "acme",
        "name": "one event.wait with the vector's filter",
        "steps": [
            {
                "id": "wait",
                "type": "event.wait",
                "event_type": "doc.changed",
                "correlation_key": {"$expr": "payload.doc_id"},
                "filters": [flt],
            }
        ],
    }


def test_every_op_and_both_outcomes_are_covered() -> None:
    ops = {case["filter"]["op"] for case in MATCH_CASES}
    assert ops == set(FILTER_OPS)
    assert {case["expect"]["match"] for case in MATCH_CASES} == {True, False}
    assert len(MATCH_CASES) < len(CASES)


@pytest.mark.parametrize("case", MATCH_CASES, ids=_ids)
def test_match(case: dict[str, Any]) -> None:
    assert matches(case["payload"], case["filter"]) is case["expect"]["match"]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_api_validation(case: dict[str, Any]) -> None:
    problems = validate(waiting_on(case["filter"]))
    expect = case["expect"]
    if "match" in expect:
        assert problems == []
    else:
        assert [(p.path, p.code) for p in problems] == [(expect["at"], expect["refused"])]
        # A filter the publish check refuses never matches either.
        assert matches(case["payload"], case["filter"]) is False


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_cli_validation(case: dict[str, Any], tmp_path: Path) -> None:
    file = tmp_path / "definition.json"
    file.write_text(json.dumps(waiting_on(case["filter"])), encoding="utf-8")
    result = CliRunner().invoke(
        flowledger.cli.app, ["definitions", "validate", str(file), "--json"]
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    document = json.loads(lines[0])
    expect = case["expect"]
    if "match" in expect:
        assert result.exit_code == 0
        assert document["valid"] is True
    else:
        assert result.exit_code == 2
        assert document["error"]["code"] == "DEFINITION_INVALID"
        found = [(p["path"], p["code"]) for p in document["error"]["problems"]]
        assert found == [(expect["at"], expect["refused"])]
