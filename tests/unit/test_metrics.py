"""The metric families without sockets: label values, what the worker counts from the
runtime events it published, and the projector's per-topic outcomes of a batch."""

from __future__ import annotations

import pytest

from flowledger.metrics import outcome_label
from flowledger.settings import Settings
from projections.apply import BatchResult
from projections.metrics import ProjectorMetrics
from workflows.metrics import WorkerMetrics


def test_outcome_labels_keep_a_small_set_of_values() -> None:
    assert outcome_label("delivered") == "delivered"
    assert outcome_label("failed: NOT_FOUND") == "failed"
    assert outcome_label("refused: RUN_INPUT_INVALID") == "refused"
    assert outcome_label("") == "unknown"


def test_worker_counts_steps_actions_and_runs_from_emitted_events() -> None:
    metrics = WorkerMetrics()
    metrics.emitted(
        [
            {"type": "StepStarted", "data": {"step_type": "assign"}},
            {"type": "StepCompleted", "data": {"step_type": "assign", "status": "SUCCEEDED"}},
            {"type": "StepCompleted", "data": {"step_type": "action.call", "status": "FAILED"}},
            {"type": "ActionInvocation", "data": {"action": "core.echo", "status": "SUCCEEDED"}},
            {
                "type": "ActionInvocation",
                "data": {"action": "core.echo", "status": "SUCCEEDED", "cached": True},
            },
            {"type": "RunCompleted", "data": {"status": "FAILED"}},
        ],
        0.01,
    )
    get = metrics.registry.get_sample_value
    assert (
        get("flowledger_worker_steps_total", {"step_type": "assign", "outcome": "succeeded"}) == 1
    )
    assert (
        get("flowledger_worker_steps_total", {"step_type": "action.call", "outcome": "failed"}) == 1
    )
    assert get("flowledger_worker_actions_total", {"action": "core.echo", "outcome": "cached"}) == 1
    assert (
        get("flowledger_worker_actions_total", {"action": "core.echo", "outcome": "succeeded"}) == 1
    )
    assert get("flowledger_worker_runs_completed_total", {"status": "FAILED"}) == 1
    assert get("flowledger_worker_runs_completed_total", {"status": "SUCCEEDED"}) == 0
    assert get("flowledger_worker_emit_seconds_count") == 1


def test_projector_counts_each_topic_and_outcome_of_a_batch() -> None:
    metrics = ProjectorMetrics()
    result = BatchResult(applied=3, skipped=1, errors=1, seconds=0.2)
    result.outcomes.update({("rt", "applied"): 3, ("rt", "skipped"): 1, ("audit", "refused"): 1})
    metrics.batch_done(result)
    get = metrics.registry.get_sample_value
    assert get("flowledger_projector_records_total", {"topic": "rt", "outcome": "applied"}) == 3
    assert get("flowledger_projector_records_total", {"topic": "audit", "outcome": "refused"}) == 1
    assert get("flowledger_projector_errors_total") == 1
    assert get("flowledger_projector_batch_seconds_count") == 1
    metrics.set_lag({("rt", 0): 4, ("rt", 1): 0})
    metrics.set_lag({("rt", 1): 2})
    assert get("flowledger_projector_lag_records", {"topic": "rt", "partition": "0"}) is None
    assert get("flowledger_projector_lag_records", {"topic": "rt", "partition": "1"}) == 2


def test_metrics_on_a_free_port_by_default_and_turned_off_by_a_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().metrics.enabled and Settings().metrics.port == 0
    monkeypatch.setenv("FLOWLEDGER_METRICS__ENABLED", "false")
    assert not Settings().metrics.enabled
