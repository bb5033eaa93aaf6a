"""What publish accepts, a run can run: a definition at the nesting limits (steps in
steps, and JSON levels) is published through the CLI and runs to completion on the
real stack; one level deeper is refused by validate and publish alike, exit 2, with
the step path, and nothing reaches the topic."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flowledger.cli
from flowledger.settings import Settings
from tests.deep_definitions import deep_text, json_levels
from tests.integration.runtime_support import completed, of_type, wait_for_events, worker
from topics.catalogue import DEFINITIONS
from topics.reader import read_all
from workflows import control
from workflows.codes import DEFINITION_TOO_DEEP
from workflows.definitions import store
from workflows.definitions.nesting import MAX_JSON_DEPTH
from workflows.messages import run_workflow_id

if not any(group.name == "definitions" for group in flowledger.cli.app.registered_groups):
    flowledger.cli._register()


def invoke(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(
        flowledger.cli.app, list(args), obj={"settings": settings}, catch_exceptions=False
    )


def with_limit(settings: Settings, levels: int) -> Settings:
    workflows = settings.workflows.model_copy(update={"max_definition_nesting": levels})
    return settings.model_copy(update={"workflows": workflows})


def write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / f"deep-{uuid.uuid4().hex[:6]}.json"
    file.write_text(text, encoding="utf-8")
    return file


def step_path_of(levels: int) -> str:
    # tests.deep_definitions cycles if(then) / tryCatch(try) / forEach(body) / if(else).
    names = ("then", "try", "body", "else")
    return "root.steps[0]" + "".join(
        f".{names[(level - 1) % len(names)]}.steps[0]" for level in range(1, levels)
    )


@pytest.mark.parametrize("limit", [None, 60], ids=["default limit", "largest setting"])
async def test_a_definition_at_both_limits_is_published_and_runs(
    settings: Settings, tmp_path: Path, limit: int | None
) -> None:
    own = settings if limit is None else with_limit(settings, limit)
    levels = own.workflows.max_definition_nesting
    definition_id = f"deep-{uuid.uuid4().hex[:6]}"
    # The innermost step's literal brings the document to the JSON limit exactly.
    text = deep_text(levels, MAX_JSON_DEPTH - (2 * levels + 2), definition_id)
    assert json_levels(json.loads(text)) == MAX_JSON_DEPTH

    published = invoke(own, "definitions", "publish", str(write(tmp_path, text)), "--json")
    assert published.exit_code == 0, published.output
    assert json.loads(published.stdout)["outcome"] == "published"
    record = store.get(own, "acme", definition_id, 1)
    assert record is not None

    async with worker(own) as client:
        started = await control.start(own, client, record, {})
        handle = client.get_workflow_handle(run_workflow_id(started.run_id))
        result = await handle.result()
    assert result["status"] == "SUCCEEDED"

    events = await wait_for_events(own, started.run_id)
    assert completed(events)["status"] == "SUCCEEDED"
    done = {e["data"]["step_id"]: e["data"] for e in of_type(events, "StepCompleted")}
    assert len(done) == levels
    leaf = done[f"s{levels}"]
    assert (leaf["step_path"], leaf["status"]) == (step_path_of(levels), "SUCCEEDED")


def refusals(settings: Settings, file: Path) -> list[tuple[int, list[tuple[str, str]]]]:
    out = []
    for command in ("validate", "publish"):
        result = invoke(settings, "definitions", command, str(file), "--json")
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "DEFINITION_INVALID", result.stdout
        out.append((result.exit_code, [(p["path"], p["code"]) for p in error["problems"]]))
    return out


def test_one_level_deeper_is_refused_by_validate_and_publish(
    settings: Settings, tmp_path: Path
) -> None:
    limit = settings.workflows.max_definition_nesting
    for levels in (limit + 1, 5000):
        file = write(tmp_path, deep_text(levels))
        refused = [(2, [(step_path_of(limit + 1), DEFINITION_TOO_DEEP)])] * 2
        assert refusals(settings, file) == refused

    literal = MAX_JSON_DEPTH - (2 * limit + 2) + 1
    file = write(tmp_path, deep_text(limit, literal))
    innermost = step_path_of(limit) + ".assign.vars.deep" + ".d" * (literal - 1)
    assert refusals(settings, file) == [(2, [(innermost, DEFINITION_TOO_DEEP)])] * 2

    wider = with_limit(settings, 60)
    file = write(tmp_path, deep_text(61))
    assert refusals(wider, file) == [(2, [(step_path_of(61), DEFINITION_TOO_DEEP)])] * 2

    assert read_all(settings, settings.topic(DEFINITIONS)) == []
