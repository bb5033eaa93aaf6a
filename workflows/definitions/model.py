"""The definition document of ARCHITECTURE §6 as pydantic models.

These models are the shape of a definition and the source of its exported JSON
Schema. They do not carry the cross-field rules (assignment targets, filter op/value
pairs, retry placement, duplicate ids...): those live in `validate.py`, which walks
the raw document so that it can report every problem with its step path, where a
single pydantic pass would stop at the first broken branch of a union.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from schemas.runtime import (
    CATCHABLE_CATEGORIES,
    CatchableCategory,
    FilterOp,
)
from schemas.schedule import OverlapPolicy

# Cancellation and InterpreterCorruption are never catchable, so they can never be
# retried either: only the catchable categories may be named by an author.
ERROR_CATEGORIES: Final = CATCHABLE_CATEGORIES
ErrorCategory = CatchableCategory


NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    # Strict: a definition is authored JSON, so "1" is not a version and 1 is not true.
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class Expr(_Strict):
    """`{"$expr": "..."}`: evaluated by the expression contract (§7) at run time."""

    expr: str = Field(alias="$expr")


# Wherever an expression is allowed a JSON literal is too. Left to right, so that an
# expression object parses as Expr rather than as a literal mapping.
ExprOrLiteral = Annotated[Expr | JsonValue, Field(union_mode="left_to_right")]
ExprMap = dict[str, ExprOrLiteral]


ACTION_RETRY_ON: Final[tuple[ErrorCategory, ...]] = ("ActionError", "TimeoutError")
# A child run fails as ChildWorkflowError, never as ActionError.
CHILD_RETRY_ON: Final[tuple[ErrorCategory, ...]] = ("ChildWorkflowError", "TimeoutError")


class RetryPolicy(_Strict):
    """Authored retries of an action (attempt 1 is the first call). Every default
    lives here; the interpreter reads the parsed policy as it is."""

    max_attempts: int = Field(ge=1)
    backoff_ms: int = Field(default=1000, ge=0)
    backoff_multiplier: float = Field(default=2.0, ge=1.0)
    # null: no cap on the delay between two attempts.
    max_delay_ms: int | None = Field(default=60_000, ge=0)
    # Deterministic failures (ValidationError, ExpressionError) would fail again.
    retry_on: list[ErrorCategory] = Field(default_factory=lambda: list(ACTION_RETRY_ON))


class ChildRetryPolicy(RetryPolicy):
    """Authored retries of a child run."""

    retry_on: list[ErrorCategory] = Field(default_factory=lambda: list(CHILD_RETRY_ON))


class Filter(_Strict):
    """An event.wait filter over the event payload: `{path, op, value}`."""

    path: NonEmptyStr
    op: FilterOp
    value: JsonValue = None


class Trigger(_Strict):
    type: Literal["event"]
    event_type: NonEmptyStr
    # name -> expression over `event`; the result is the run input.
    payload_mapping: ExprMap = Field(default_factory=dict)


class ScheduleTrigger(_Strict):
    """A Temporal Schedule that starts runs of the definition's version: exactly one
    of `cron`, `interval_ms` and `at` (the cross-field rules are schedule_rules')."""

    type: Literal["schedule"]
    # Required in `triggers: [...]`; a lone `trigger` is named "default".
    name: NonEmptyStr | None = None
    cron: NonEmptyStr | None = None
    interval_ms: int | None = Field(default=None, ge=1000)
    # ISO-8601 with an offset: one run at that time.
    at: NonEmptyStr | None = None
    # An IANA zone: what cron fields mean.
    timezone: NonEmptyStr = "UTC"
    overlap: OverlapPolicy = "skip"
    # How late a missed run may still start (after an outage); None: Temporal's default.
    catchup_window_ms: int | None = Field(default=None, ge=1000)
    jitter_ms: int = Field(default=0, ge=0)
    # name -> expression; the context has `system.scheduled_at`. The result is the input.
    input: ExprMap = Field(default_factory=dict)


AnyTrigger = Annotated[Trigger | ScheduleTrigger, Field(discriminator="type")]


class _Step(_Strict):
    id: NonEmptyStr


class AssignStep(_Step):
    type: Literal["assign"]
    assign: ExprMap


class ActionCallStep(_Step):
    type: Literal["action.call"]
    action: NonEmptyStr
    version: int = Field(ge=1)
    input: ExprMap = Field(default_factory=dict)
    save_as: str | None = None
    idempotency_key: ExprOrLiteral = None
    retry: RetryPolicy | None = None
    on_error: Literal["fail", "continue"] = "fail"


class IfStep(_Step):
    type: Literal["control.if"]
    condition: ExprOrLiteral
    then: list[Step]
    else_: list[Step] = Field(default_factory=list, alias="else")


class ForEachStep(_Step):
    type: Literal["control.forEach"]
    items: ExprOrLiteral
    item_var: NonEmptyStr = "item"
    body: list[Step]
    on_item_error: Literal["fail", "continue"] = "fail"


class TryCatchStep(_Step):
    type: Literal["control.tryCatch"]
    try_: list[Step] = Field(alias="try")
    catch: list[Step] = Field(default_factory=list)
    capture_error_as: str | None = None


class CallWorkflowStep(_Step):
    type: Literal["control.callWorkflow"]
    definition_id: NonEmptyStr
    # None: the latest published version when the parent reaches the step.
    version: int | None = Field(default=None, ge=1)
    input: ExprMap = Field(default_factory=dict)
    output: ExprMap = Field(default_factory=dict)
    retry: ChildRetryPolicy | None = None


class ReturnStep(_Step):
    type: Literal["control.return"]
    output: ExprOrLiteral = None


class EventWaitStep(_Step):
    type: Literal["event.wait"]
    event_type: NonEmptyStr
    correlation_key: ExprOrLiteral
    filters: list[Filter] = Field(default_factory=list)
    timeout_ms: int | None = Field(default=None, ge=1)
    assign: ExprMap = Field(default_factory=dict)


class TimeWaitStep(_Step):
    type: Literal["time.wait"]
    duration_ms: int | None = Field(default=None, ge=0)
    until: ExprOrLiteral = None
    assign: ExprMap = Field(default_factory=dict)


class HumanTaskStep(_Step):
    type: Literal["human.task"]
    task_type: NonEmptyStr
    title: ExprOrLiteral
    description: ExprOrLiteral = None
    context: ExprMap = Field(default_factory=dict)
    form_schema: dict[str, Any] | None = None
    assign: ExprMap = Field(default_factory=dict)


Step = Annotated[
    AssignStep
    | ActionCallStep
    | IfStep
    | ForEachStep
    | TryCatchStep
    | CallWorkflowStep
    | ReturnStep
    | EventWaitStep
    | TimeWaitStep
    | HumanTaskStep,
    Field(discriminator="type"),
]


class Definition(_Strict):
    id: NonEmptyStr
    version: int = Field(ge=1)
    tenant: NonEmptyStr
    name: NonEmptyStr
    # Optional (§6). The hash is of the document as published, so leaving it out
    # and writing "" are two contents (docs/decisions.md).
    description: str = ""
    payload_schema: dict[str, Any] | None = None
    trigger: AnyTrigger | None = None
    # Several schedules, each named (schedule ids are built from the names).
    triggers: list[ScheduleTrigger] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)


# Every step type's model, in the order of the union; the step-type registry
# (workflows.step_types) gives each its child lists, publish rule and handler.
STEP_MODELS: Final[tuple[type[BaseModel], ...]] = tuple(get_args(get_args(Step)[0]))

_REBUILT: Final[tuple[type[BaseModel], ...]] = (*STEP_MODELS, Definition)
for _model in _REBUILT:
    _model.model_rebuild()

_ADAPTER: Final = TypeAdapter(Definition)


def definition_json_schema() -> dict[str, Any]:
    """The JSON Schema of a definition document (exported to schemas/json/)."""
    return _ADAPTER.json_schema(by_alias=True)
