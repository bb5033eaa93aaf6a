"""Publish-time validation of a definition document: every problem, with its path.

The walk goes over the raw document rather than a parsed model so that one broken
step does not hide the problems of its siblings, and so that each problem can name
the step path the interpreter will later use (`root.steps[2].then.steps[0]`).
Field shapes come from the pydantic models of `model.py`, checked one step at a
time with the nested step lists left to the walk; the cross-field rules of each step
type are in `rules.py`, found through the step-type registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from flowledger.errors import FlowledgerError
from flowledger.settings import ExpressionSettings, Settings, WorkflowSettings
from workflows.actions.registry import REGISTRY
from workflows.codes import (
    DEFINITION_DUPLICATE_STEP_ID,
    DEFINITION_FIELD_INVALID,
    DEFINITION_FIELD_MISSING,
    DEFINITION_FOREACH_CONCURRENCY,
    DEFINITION_INVALID,
    DEFINITION_ON_ERROR_NOT_ALLOWED,
    DEFINITION_RETRY_NOT_ALLOWED,
    DEFINITION_TOO_DEEP,
    DEFINITION_TOO_LARGE,
    DEFINITION_UNKNOWN_FIELD,
    DEFINITION_UNKNOWN_STEP_TYPE,
)
from workflows.definitions.canonical import canonical_json
from workflows.definitions.checks import (
    Checker,
    Problem,
    loc_path,
)
from workflows.definitions.model import Definition
from workflows.definitions.nesting import TooDeep, json_depth, scan_text, step_nesting
from workflows.definitions.schedule_rules import check_schedules
from workflows.step_types import STEP_TYPES

TRIGGER_TYPES = frozenset({"event", "schedule"})
# The step-list fields of each step type, and all of their names.
STEP_CHILDREN: dict[str, tuple[str, ...]] = {name: t.children for name, t in STEP_TYPES.items()}
CHILD_NAMES: frozenset[str] = frozenset(n for names in STEP_CHILDREN.values() for n in names)


class DefinitionInvalid(FlowledgerError):
    """A definition with at least one problem; `problems` lists all of them."""

    code = DEFINITION_INVALID

    def __init__(self, problems: Sequence[Problem], message: str | None = None) -> None:
        self.problems: list[Problem] = list(problems)
        if message is None:
            first = self.problems[0] if self.problems else None
            detail = f"; first: {first.path}: {first.message}" if first else ""
            message = f"the definition has {len(self.problems)} problem(s){detail}"
        super().__init__(message, problems=[p.as_dict() for p in self.problems])


def validate(
    document: Any, settings: Settings | None = None, now: datetime | None = None
) -> list[Problem]:
    """Every problem of `document`, in document order; an empty list means valid."""
    walker = _Walker(
        settings.expressions if settings is not None else ExpressionSettings(),
        settings.workflows if settings is not None else WorkflowSettings(),
        REGISTRY,
    )
    walker.now = now or datetime.now(UTC)
    walker.document(document)
    return walker.problems


def too_deep_text(text: str, settings: Settings | None = None) -> DefinitionInvalid | None:
    """The refusal of a definition text too deeply nested to parse, at the same path
    `validate` names for a document it could parse; None when the text is not that."""
    workflows = settings.workflows if settings is not None else WorkflowSettings()
    found = scan_text(text, workflows.max_definition_nesting, CHILD_NAMES)
    if found is None:
        return None
    return DefinitionInvalid([_too_deep_problem(found)])


def _too_deep_problem(found: TooDeep) -> Problem:
    return Problem(found.path, DEFINITION_TOO_DEEP, found.message)


def parse(document: Any, settings: Settings | None = None) -> Definition:
    """The parsed definition, or DefinitionInvalid carrying every problem."""
    problems = validate(document, settings)
    if problems:
        raise DefinitionInvalid(problems)
    try:
        return Definition.model_validate(document)
    except ValidationError as exc:
        # validate() checks a superset of the model; reaching here is a bug, but the
        # caller still deserves the refusal in the usual form.
        raise DefinitionInvalid(_pydantic_problems(exc, "root", frozenset())) from exc


def _pydantic_problems(
    exc: ValidationError, base: str, handled: frozenset[tuple[int | str, ...]]
) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if any(loc[: len(prefix)] == prefix for prefix in handled):
            continue
        kind = error["type"]
        # The trigger is a union on `type`: its problems are named at the trigger's own
        # fields, without pydantic's tag segment, and a wrong tag at `type`.
        if loc[:1] == ("trigger",) and len(loc) > 1 and loc[1] in TRIGGER_TYPES:
            loc = loc[:1] + loc[2:]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")
        if kind == "missing":
            code, message = DEFINITION_FIELD_MISSING, "required field is missing"
        elif kind == "extra_forbidden":
            code, message = DEFINITION_UNKNOWN_FIELD, "unknown field"
        else:
            code, message = DEFINITION_FIELD_INVALID, str(error["msg"])
        problems.append(Problem(loc_path(base, loc), code, message))
    return problems


class _Walker(Checker):
    # step id -> the path where it first appears, filled in by the walk
    step_ids: dict[str, str]
    # what a one-time schedule's `at` must lie after
    now: datetime

    def document(self, document: Any) -> None:
        self.step_ids = {}
        if not isinstance(document, dict):
            self.add("root", DEFINITION_FIELD_INVALID, "a definition is a JSON object")
            return
        # First, and without recursion: everything after this point recurses, and a
        # document past either limit could never run anyway.
        found = step_nesting(
            document, self.workflows.max_definition_nesting, STEP_CHILDREN
        ) or json_depth(document, CHILD_NAMES)
        if found is not None:
            self.problems.append(_too_deep_problem(found))
            return
        self.size(document)
        steps = document.get("steps")
        shallow = dict(document)
        handled: set[tuple[int | str, ...]] = set()
        if isinstance(steps, list):
            # The steps are walked one by one below; the model only sees the list.
            shallow["steps"] = []
            handled.add(("steps",))
        self.shape(Definition, shallow, "root", handled)

        if isinstance(document.get("payload_schema"), dict):
            self.json_schema(document["payload_schema"], "root.payload_schema")
        trigger = document.get("trigger")
        if isinstance(trigger, dict):
            self.expr_map(trigger.get("payload_mapping"), "root.trigger.payload_mapping")
        check_schedules(self, document, self.now)
        if isinstance(steps, list):
            if not steps:
                self.add("root.steps", DEFINITION_FIELD_INVALID, "a definition needs a step")
            self.steps(steps, "root.steps")

    def size(self, document: dict[str, Any]) -> None:
        try:
            text = canonical_json(document)
        except (TypeError, ValueError) as exc:
            self.add("root", DEFINITION_FIELD_INVALID, f"not plain JSON: {exc}")
            return
        size = len(text.encode("utf-8"))
        limit = self.workflows.max_definition_bytes
        if size > limit:
            self.add(
                "root",
                DEFINITION_TOO_LARGE,
                f"the canonical JSON is {size} bytes; the limit is {limit}",
            )

    def shape(
        self,
        model: type[BaseModel],
        data: dict[str, Any],
        path: str,
        handled: set[tuple[int | str, ...]],
        step_type: str | None = None,
    ) -> None:
        try:
            model.model_validate(data)
        except ValidationError as exc:
            for problem in _pydantic_problems(exc, path, frozenset(handled)):
                self.problems.append(self.refine(problem, path, step_type))

    def refine(self, problem: Problem, step_path: str, step_type: str | None) -> Problem:
        """Unknown step fields that the architecture names get their own codes."""
        if step_type is None or problem.code != DEFINITION_UNKNOWN_FIELD:
            return problem
        field = problem.path[len(step_path) + 1 :]
        if "." in field or "[" in field:
            return problem
        if field == "retry":
            return Problem(
                problem.path,
                DEFINITION_RETRY_NOT_ALLOWED,
                f"{step_type} does not take a retry policy "
                "(only action.call and control.callWorkflow do)",
            )
        if field == "on_error":
            return Problem(
                problem.path,
                DEFINITION_ON_ERROR_NOT_ALLOWED,
                f"{step_type} does not take on_error (only action.call does)",
            )
        lowered = field.lower()
        if step_type == "control.forEach" and ("concurren" in lowered or "parallel" in lowered):
            return Problem(
                problem.path,
                DEFINITION_FOREACH_CONCURRENCY,
                "control.forEach runs its items one after another; concurrency is not offered",
            )
        return problem

    def steps(self, items: list[Any], prefix: str) -> None:
        for index, step in enumerate(items):
            self.step(step, f"{prefix}[{index}]")

    def step(self, step: Any, path: str) -> None:
        if not isinstance(step, dict):
            self.add(path, DEFINITION_FIELD_INVALID, "a step is a JSON object")
            return
        self.step_id(step, path)
        step_type = step.get("type")
        if "type" not in step:
            self.add(f"{path}.type", DEFINITION_FIELD_MISSING, "a step needs a type")
            return
        # Only a registered step type (model, rule and handler) passes: a model
        # alone would fail at run time.
        registered = STEP_TYPES.get(step_type) if isinstance(step_type, str) else None
        if registered is None or not isinstance(step_type, str):
            known = ", ".join(sorted(STEP_TYPES))
            self.add(
                f"{path}.type",
                DEFINITION_UNKNOWN_STEP_TYPE,
                f"unknown step type {step_type!r}; known: {known}",
            )
            return
        children = registered.children
        shallow = dict(step)
        handled: set[tuple[int | str, ...]] = {("id",)}
        for name in children:
            if isinstance(step.get(name), list):
                shallow[name] = []
                handled.add((name,))
        registered.rule(self, step, path, handled)
        self.shape(registered.model, shallow, path, handled, step_type)

        for name in children:
            nested = step.get(name)
            if isinstance(nested, list):
                self.steps(nested, f"{path}.{name}.steps")

    def step_id(self, step: dict[str, Any], path: str) -> None:
        if "id" not in step:
            self.add(f"{path}.id", DEFINITION_FIELD_MISSING, "a step needs an id")
            return
        step_id = step["id"]
        if not isinstance(step_id, str) or not step_id:
            self.add(f"{path}.id", DEFINITION_FIELD_INVALID, "a step id is a non-empty string")
            return
        first = self.step_ids.setdefault(step_id, path)
        if first != path:
            self.add(
                f"{path}.id",
                DEFINITION_DUPLICATE_STEP_ID,
                f"step id {step_id!r} is already used at {first}",
            )
