"""Replay the committed Temporal histories against today's workflow code: a change
that would break running workflows (non-determinism) fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.worker import WORKFLOW_RUNNER, WORKFLOWS

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "histories").glob("*.json"))


def test_histories_are_committed() -> None:
    names = {p.stem for p in HISTORIES}
    assert {
        "control-flow",
        "actions-retry",
        "event-wait",
        "canceled",
        "human-task",
        "human-task-refused",
        "action-ledger",
        "child",
        "continue-as-new",
        "wait-continue-as-new",
    } <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    workflow_id = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"].get(
        "workflowId", path.stem
    )
    history = WorkflowHistory.from_json(workflow_id, text)
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=WORKFLOW_RUNNER,
    )
    await replayer.replay_workflow(history)
