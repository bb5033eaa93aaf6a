"""Runtime events: what workflow activities publish on flowledger.runtime.v1.

Each event type is its own model with a literal ``type``; the union discriminates on
it, so a consumer either gets a fully typed event or a validation error naming the
field at fault."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, TypeAdapter

from schemas.base import NonEmptyStr, Record, Timestamp

RUNTIME_NAMESPACE = uuid.UUID("6b1f3c1e-2a57-5d0e-9a3c-4f6e0f1a7d21")
_NAMESPACE_BYTES = RUNTIME_NAMESPACE.bytes
_SHA1 = hashlib.sha1

RunStatus = Literal[
    "RUNNING", "WAITING", "SUCCEEDED", "FAILED", "CANCELED", "TERMINATED", "TIMED_OUT"
]
TerminalStatus = Literal["SUCCEEDED", "FAILED", "CANCELED"]
# Temporal's verdicts on a run its workflow code never got to finish (RunReconciled).
ReconciledStatus = Literal["TERMINATED", "TIMED_OUT"]
TERMINAL_STATUSES: frozenset[str] = frozenset(get_args(TerminalStatus)) | frozenset(
    get_args(ReconciledStatus)
)
WaitResolution = Literal["RESOLVED", "TIMED_OUT", "CANCELED"]
WaitType = Literal["event", "time", "human"]
FilterOp = Literal[
    "=",
    "!=",
    "in",
    "not_in",
    "exists",
    "not_exists",
    ">",
    ">=",
    "<",
    "<=",
    "contains",
    "starts_with",
    "ends_with",
]
FILTER_OPS: tuple[str, ...] = get_args(FilterOp)
CatchableCategory = Literal[
    "ValidationError",
    "ExpressionError",
    "ActionError",
    "TimeoutError",
    "ChildWorkflowError",
]
ErrorCategory = Literal[CatchableCategory, "Cancellation", "InterpreterCorruption"]
CATCHABLE_CATEGORIES: tuple[str, ...] = get_args(CatchableCategory)


def runtime_event_id(run_id: str, seq: int) -> uuid.UUID:
    """Deterministic id, so a replayed workflow or a retried activity re-emits the same
    event and consumers drop the copy."""
    # uuid.uuid5 itself, with its hash function imported once here: uuid5 imports it
    # on every call, which in Temporal's sandbox runs the sandbox's import hook.
    digest = _SHA1(_NAMESPACE_BYTES + f"{run_id}:{seq}".encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


class RunError(Record):
    category: ErrorCategory
    code: str
    message: str
    step_path: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class RunStartedData(Record):
    definition_id: NonEmptyStr
    version: int = Field(ge=1)
    definition_hash: NonEmptyStr
    input: dict[str, Any] = Field(default_factory=dict)
    workflow_id: str | None = None
    trigger_event_id: str | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    parent_step_path: str | None = None
    # The interpreter's semantics version (workflows.semantics); absent on runs
    # started before runs pinned it.
    semantics_version: int | None = Field(default=None, ge=1)
    # A run a Temporal Schedule started: the schedule and the time it was meant for.
    schedule_id: str | None = None
    scheduled_at: Timestamp | None = None


class StepStartedData(Record):
    step_path: NonEmptyStr
    step_id: str | None = None
    step_type: NonEmptyStr
    iteration: int | None = None


class StepCompletedData(Record):
    step_path: NonEmptyStr
    step_id: str | None = None
    step_type: NonEmptyStr
    status: Literal["SUCCEEDED", "FAILED", "SKIPPED"]
    output: Any = None
    error: RunError | None = None


class EventFilter(Record):
    path: NonEmptyStr
    op: FilterOp
    value: Any = None


class WaitCreatedData(Record):
    wait_id: NonEmptyStr
    wait_type: WaitType
    step_path: NonEmptyStr
    event_type: str | None = None
    correlation_key: str | None = None
    filters: list[EventFilter] = Field(default_factory=list)
    timeout_at: Timestamp | None = None
    task_id: str | None = None
    # Events Kafka received from this time on (less the clock-skew tolerance) are the
    # wait's to take: the run's start request for its first wait, the resolution of
    # its previous wait after that (workflows/wait_rule.py). None in events written
    # before it existed; readers then use the event's own time.
    eligible_from: Timestamp | None = None


class WaitResolvedData(Record):
    wait_id: NonEmptyStr
    resolution: WaitResolution
    matched_event_id: str | None = None


class ActionInvocationData(Record):
    invocation_id: NonEmptyStr
    step_path: NonEmptyStr
    action: NonEmptyStr
    version: int = Field(ge=1)
    attempt: int = Field(default=1, ge=1)
    idempotency_key: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    status: Literal["SUCCEEDED", "FAILED"]
    output: Any = None
    error: RunError | None = None
    # The idempotency ledger answered with a recorded output: the action did not run.
    cached: bool = False


class HumanTaskCreatedData(Record):
    task_id: NonEmptyStr
    step_path: NonEmptyStr
    task_type: NonEmptyStr
    title: str
    description: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    form_schema: dict[str, Any] = Field(default_factory=dict)


class HumanTaskCompletedData(Record):
    task_id: NonEmptyStr
    response: dict[str, Any] = Field(default_factory=dict)
    completed_by: NonEmptyStr
    # REFUSED: the response broke the task's form schema and failed the step.
    status: Literal["COMPLETED", "REFUSED"] = "COMPLETED"


class RunLogData(Record):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class RunCompletedData(Record):
    status: TerminalStatus
    output: Any = None
    error: RunError | None = None


class RunContinuedAsNewData(Record):
    next_seq: int = Field(ge=1)
    steps_executed: int = Field(default=0, ge=0)


class RunReconciledData(Record):
    """Temporal closed the run without its workflow code finishing it (terminated in the
    UI or CLI, `runs terminate`, an execution timeout). Written by the reconciler, never
    by workflow code: it records Temporal's decision."""

    status: ReconciledStatus
    closed_at: Timestamp
    reason: str | None = None
    identity: str | None = None
    execution_id: NonEmptyStr


class RunResetData(Record):
    """Temporal reset the run: ``events`` are every runtime event the current execution
    (with the executions it continued from) has emitted, as its history shows them; the
    run's rows are rebuilt from them. ``through_seq`` is the highest seq among them, so
    a later reset record of the same execution that knows more supersedes this one and
    a copy of it changes nothing."""

    execution_id: NonEmptyStr
    reset_from_execution_id: NonEmptyStr
    through_seq: int = Field(ge=0)
    reason: str | None = None
    identity: str | None = None
    events: list[dict[str, Any]] = Field(default_factory=list)


class _RuntimeEventBase(Record):
    event_id: uuid.UUID
    run_id: NonEmptyStr
    tenant: NonEmptyStr
    seq: int = Field(ge=1)
    occurred_at: Timestamp


class RunStarted(_RuntimeEventBase):
    type: Literal["RunStarted"] = "RunStarted"
    data: RunStartedData


class StepStarted(_RuntimeEventBase):
    type: Literal["StepStarted"] = "StepStarted"
    data: StepStartedData


class StepCompleted(_RuntimeEventBase):
    type: Literal["StepCompleted"] = "StepCompleted"
    data: StepCompletedData


class WaitCreated(_RuntimeEventBase):
    type: Literal["WaitCreated"] = "WaitCreated"
    data: WaitCreatedData


class WaitResolved(_RuntimeEventBase):
    type: Literal["WaitResolved"] = "WaitResolved"
    data: WaitResolvedData


class ActionInvocation(_RuntimeEventBase):
    type: Literal["ActionInvocation"] = "ActionInvocation"
    data: ActionInvocationData


class HumanTaskCreated(_RuntimeEventBase):
    type: Literal["HumanTaskCreated"] = "HumanTaskCreated"
    data: HumanTaskCreatedData


class HumanTaskCompleted(_RuntimeEventBase):
    type: Literal["HumanTaskCompleted"] = "HumanTaskCompleted"
    data: HumanTaskCompletedData


class RunLog(_RuntimeEventBase):
    type: Literal["RunLog"] = "RunLog"
    data: RunLogData


class RunCompleted(_RuntimeEventBase):
    type: Literal["RunCompleted"] = "RunCompleted"
    data: RunCompletedData


class RunContinuedAsNew(_RuntimeEventBase):
    type: Literal["RunContinuedAsNew"] = "RunContinuedAsNew"
    data: RunContinuedAsNewData


class RunReconciled(_RuntimeEventBase):
    type: Literal["RunReconciled"] = "RunReconciled"
    data: RunReconciledData


class RunReset(_RuntimeEventBase):
    type: Literal["RunReset"] = "RunReset"
    data: RunResetData


RuntimeEvent = Annotated[
    RunStarted
    | StepStarted
    | StepCompleted
    | WaitCreated
    | WaitResolved
    | ActionInvocation
    | HumanTaskCreated
    | HumanTaskCompleted
    | RunLog
    | RunCompleted
    | RunContinuedAsNew
    | RunReconciled
    | RunReset,
    Field(discriminator="type"),
]

RUNTIME_EVENT_ADAPTER: TypeAdapter[RuntimeEvent] = TypeAdapter(RuntimeEvent)

# Everything below is read off the union, so an event type is declared once: its
# data model and its envelope model above, and its place in the union.
RUNTIME_EVENT_MODELS: tuple[type[_RuntimeEventBase], ...] = get_args(get_args(RuntimeEvent)[0])
RUNTIME_EVENT_TYPES: tuple[str, ...] = tuple(
    str(model.model_fields["type"].default) for model in RUNTIME_EVENT_MODELS
)
# data model -> the event model that carries it (how the interpreter numbers an event).
EVENT_MODEL_FOR_DATA: dict[type[Record], Callable[..., _RuntimeEventBase]] = {
    model.model_fields["data"].annotation: model  # type: ignore[misc]
    for model in RUNTIME_EVENT_MODELS
}
