"""What crosses the Temporal boundary: workflow input, signals, activity inputs and
results. pydantic models, carried by temporalio's pydantic data converter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flowledger.settings import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_STEP_BUDGET
from workflows.semantics import UNPINNED_SEMANTICS_VERSION

WORKFLOW_NAME = "flowledger.interpreter"


def run_workflow_id(run_id: str) -> str:
    return f"flowledger:run:{run_id}"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExpressionOptions(_Message):
    extra_functions: tuple[str, ...] = ()
    step_budget: int = DEFAULT_STEP_BUDGET
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS


class DeliveredEvent(_Message):
    """The `deliver_event` signal: an ingress event routed to this run."""

    event_id: str
    event_type: str
    correlation_key: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    received_at: str | None = None
    # The ingress record's W3C traceparent: the runtime events the run emits after
    # this event carry its trace on.
    traceparent: str | None = None


class TaskCompletion(_Message):
    """The `complete_human_task` signal (sent only after the response was validated
    against the task's form schema; the workflow checks it again)."""

    task_id: str
    response: dict[str, Any] = Field(default_factory=dict)
    completed_by: str


class RunOptions(_Message):
    # Continue-as-new after this many steps in one execution (Temporal may ask sooner).
    continue_as_new_steps: int = 250
    # Stay well under Temporal's per-execution signal limit (10,000 by default).
    continue_as_new_signals: int = 2_000
    delivered_ids_limit: int = 1_000
    # Routed events kept for a wait to come; past this the oldest go (with a RunLog).
    buffered_events_limit: int = 1_000
    # The processor's clock_skew_tolerance_s: both sides apply one rule with one value.
    clock_skew_tolerance_s: float = 2.0
    # The cluster has flowledger's search attributes (workflows/visibility.py): the
    # run upserts its correlation keys. Off in runs started before it existed, and
    # wherever they are not registered (an upsert of an unknown one fails the task).
    search_attributes: bool = False


class CancelRequest(_Message):
    reason: str
    requested_by: str | None = None


class Carry(_Message):
    """Interpreter state handed across continue-as-new: where to resume (the cursor
    through the step tree), the run's data, and every signal not yet consumed."""

    next_seq: int = 1
    payload: dict[str, Any] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict)
    cursor: list[dict[str, Any]] = Field(default_factory=list)
    steps_executed: int = 0
    executions: int = 1
    delivered_ids: list[str] = Field(default_factory=list)
    buffered: list[DeliveredEvent] = Field(default_factory=list)
    completions: list[TaskCompletion] = Field(default_factory=list)
    semantics_version: int = UNPINNED_SEMANTICS_VERSION
    # Where the run's next wait may take events from (workflows/wait_rule.py): the
    # first execution's start request, or the last wait's resolution.
    wait_from: datetime | None = None


class RunInput(_Message):
    run_id: str
    # flowledger:run:<run_id>, or flowledger:trigger:... for a run an event started.
    workflow_id: str | None = None
    tenant: str
    definition_id: str
    version: int
    definition_hash: str
    definition: dict[str, Any]
    input: dict[str, Any] = Field(default_factory=dict)
    trigger_event_id: str | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    parent_step_path: str | None = None
    # A run a Temporal Schedule starts (workflows/scheduled_run.py): the schedule's
    # action has no run id and carries the `input` expression map; the workflow fills
    # in the run id, the scheduled time and the evaluated input.
    schedule_id: str | None = None
    scheduled_at: datetime | None = None
    schedule_input: dict[str, Any] | None = None
    # The input expression's failure ({code, message}); the run fails with it.
    input_error: dict[str, Any] | None = None
    expressions: ExpressionOptions = Field(default_factory=ExpressionOptions)
    options: RunOptions = Field(default_factory=RunOptions)
    carry: Carry | None = None


class RunResult(_Message):
    run_id: str
    # SUCCEEDED, FAILED, CANCELED, or CONTINUE_AS_NEW (then `carry` is set).
    status: str
    output: Any = None
    error: dict[str, Any] | None = None
    last_seq: int = 0
    carry: Carry | None = None


class EmitRequest(_Message):
    """Runtime events (already numbered by the workflow) for one run, in seq order."""

    run_id: str
    events: list[dict[str, Any]]
    # The trace of the event that last resumed the run (DeliveredEvent.traceparent).
    traceparent: str | None = None


class ActionRequest(_Message):
    run_id: str
    tenant: str
    step_path: str
    iteration: str
    action: str
    version: int
    input: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str
    attempt: int = 1
    # The key was authored: the idempotency ledger answers for it.
    ledger: bool = False


class ActionResult(_Message):
    output: dict[str, Any] = Field(default_factory=dict)
    # Set by actions whose effect is a RunLog entry (core.log); the workflow numbers it.
    run_log: dict[str, Any] | None = None
    # The idempotency ledger's recorded output; the action did not run.
    cached: bool = False


class DefinitionRequest(_Message):
    tenant: str
    definition_id: str
    version: int | None = None


class DefinitionReply(_Message):
    definition_id: str
    version: int
    definition_hash: str
    definition: dict[str, Any]
