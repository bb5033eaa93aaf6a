"""Every public correlation vector, through the Python API and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flowledger.cli
from processors.correlation import CorrelationConfigError, load_paths, resolve

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "correlation.json").read_text(encoding="utf-8")
)
CASES: list[dict[str, Any]] = VECTORS["cases"]
# With no --paths the CLI falls back to settings; the vectors mean "none configured".
CLEAN_ENV: dict[str, str | None] = {
    "FLOWLEDGER_CORRELATION__PATHS": None,
    "FLOWLEDGER_CORRELATION__PATHS_FILE": None,
}

# Other test modules may have registered the command modules already.
if not any(group.name == "expr" for group in flowledger.cli.app.registered_groups):
    flowledger.cli._register()


def _ids(case: dict[str, Any]) -> str:
    return str(case["name"])


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_api(case: dict[str, Any]) -> None:
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(CorrelationConfigError) as caught:
            resolve(case["event"], load_paths(case["paths"]))
        assert caught.value.code == expect["error"]
        return
    result = resolve(case["event"], load_paths(case["paths"]))
    assert (result.key, result.source, result.detail) == (
        expect["key"],
        expect["source"],
        expect["detail"],
    )


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_cli(case: dict[str, Any], tmp_path: Path) -> None:
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(case["event"]), encoding="utf-8")
    args = ["correlate", "--event", str(event_file), "--json"]
    if case["paths"] is not None:
        args += ["--paths", json.dumps(case["paths"])]
    result = CliRunner().invoke(flowledger.cli.app, args, env=CLEAN_ENV)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    document = json.loads(lines[0])
    expect = case["expect"]
    if "error" in expect:
        assert result.exit_code == 2
        assert document["error"]["code"] == expect["error"]
        assert isinstance(document["error"]["message"], str)
    else:
        assert result.exit_code == 0
        assert document == {
            "correlation_key": expect["key"],
            "source": expect["source"],
            "detail": expect["detail"],
        }
