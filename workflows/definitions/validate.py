"""Publish-time validation of a definition document: every problem, with its path.

The walk goes over the raw document rather than a parsed model so that one broken
step does not hide the problems of its siblings, and so that each problem can name
the step path the interpreter will later use (`root.steps[2].then.steps[0]`).
Field shapes come from the pydantic models of `model.py`, checked one step at a
time with the nested step lists left to the walk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from pydantic import BaseModel, ValidationError

from flowledger.errors import FlowledgerError
from flowledger.settings import ExpressionSettings, Settings, WorkflowSettings
from schemas.runtime import FILTER_OPS
from workflows.actions.registry import ActionSpec, known_actions, lookup
from workflows.definitions.canonical import canonical_json
from workflows.definitions.model import CHILD_LISTS, STEP_MODELS, Definition
from workflows.expressions import ExpressionError, compile_with

# Problem codes (expression problems carry the expression contract's own codes).
DEFINITION_INVALID: Final = "DEFINITION_INVALID"
DEFINITION_TOO_LARGE: Final = "DEFINITION_TOO_LARGE"
DEFINITION_FIELD_MISSING: Final = "DEFINITION_FIELD_MISSING"
DEFINITION_FIELD_INVALID: Final = "DEFINITION_FIELD_INVALID"
DEFINITION_UNKNOWN_FIELD: Final = "DEFINITION_UNKNOWN_FIELD"
DEFINITION_UNKNOWN_STEP_TYPE: Final = "DEFINITION_UNKNOWN_STEP_TYPE"
DEFINITION_DUPLICATE_STEP_ID: Final = "DEFINITION_DUPLICATE_STEP_ID"
DEFINITION_RETRY_NOT_ALLOWED: Final = "DEFINITION_RETRY_NOT_ALLOWED"
DEFINITION_ON_ERROR_NOT_ALLOWED: Final = "DEFINITION_ON_ERROR_NOT_ALLOWED"
DEFINITION_FOREACH_CONCURRENCY: Final = "DEFINITION_FOREACH_CONCURRENCY"
DEFINITION_WAIT_INCOMPLETE: Final = "DEFINITION_WAIT_INCOMPLETE"
DEFINITION_TIME_WAIT_INVALID: Final = "DEFINITION_TIME_WAIT_INVALID"
DEFINITION_FILTER_INVALID: Final = "DEFINITION_FILTER_INVALID"
DEFINITION_ACTION_UNKNOWN: Final = "DEFINITION_ACTION_UNKNOWN"
DEFINITION_ACTION_INPUT_INVALID: Final = "DEFINITION_ACTION_INPUT_INVALID"
DEFINITION_ASSIGN_TARGET_INVALID: Final = "DEFINITION_ASSIGN_TARGET_INVALID"
DEFINITION_SCHEMA_INVALID: Final = "DEFINITION_SCHEMA_INVALID"

# The step types whose runtime support arrives with a later issue.

TARGET_ROOTS: Final = ("vars", "payload", "local")
# Segments that would reach an object's prototype in a JavaScript-style evaluator;
# refused everywhere so a definition means the same in any runtime.
FORBIDDEN_SEGMENTS: Final = frozenset({"__proto__", "constructor", "prototype"})
LOOP_LOCALS: Final = frozenset({"index", "length", "is_first", "is_last"})
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]+")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_NUMERIC_OPS: Final = frozenset({">", ">=", "<", "<="})
_ARRAY_OPS: Final = frozenset({"in", "not_in"})
_STRING_OPS: Final = frozenset({"contains", "starts_with", "ends_with"})
_PRESENCE_OPS: Final = frozenset({"exists", "not_exists"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where (`path`), what (`code`), and why."""

    path: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


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


def validate(document: Any, settings: Settings | None = None) -> list[Problem]:
    """Every problem of `document`, in document order; an empty list means valid."""
    walker = _Walker(
        settings.expressions if settings is not None else ExpressionSettings(),
        settings.workflows if settings is not None else WorkflowSettings(),
    )
    walker.document(document)
    return walker.problems


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


def _loc_path(base: str, loc: Iterable[int | str]) -> str:
    out = base
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _pydantic_problems(
    exc: ValidationError, base: str, handled: frozenset[tuple[int | str, ...]]
) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if any(loc[: len(prefix)] == prefix for prefix in handled):
            continue
        kind = error["type"]
        if kind == "missing":
            code, message = DEFINITION_FIELD_MISSING, "required field is missing"
        elif kind == "extra_forbidden":
            code, message = DEFINITION_UNKNOWN_FIELD, "unknown field"
        else:
            code, message = DEFINITION_FIELD_INVALID, str(error["msg"])
        problems.append(Problem(_loc_path(base, loc), code, message))
    return problems


def _is_expr(value: Any) -> bool:
    return isinstance(value, dict) and "$expr" in value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Walker:
    def __init__(self, expressions: ExpressionSettings, workflows: WorkflowSettings) -> None:
        self.expressions = expressions
        self.workflows = workflows
        self.problems: list[Problem] = []
        self.step_ids: dict[str, str] = {}

    def add(self, path: str, code: str, message: str) -> None:
        self.problems.append(Problem(path, code, message))

    # -- the document ------------------------------------------------------------

    def document(self, document: Any) -> None:
        if not isinstance(document, dict):
            self.add("root", DEFINITION_FIELD_INVALID, "a definition is a JSON object")
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

    # -- steps -------------------------------------------------------------------

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
        model = STEP_MODELS.get(step_type) if isinstance(step_type, str) else None
        if model is None or not isinstance(step_type, str):
            known = ", ".join(sorted(STEP_MODELS))
            self.add(
                f"{path}.type",
                DEFINITION_UNKNOWN_STEP_TYPE,
                f"unknown step type {step_type!r}; known: {known}",
            )
            return
        children = CHILD_LISTS.get(step_type, ())
        shallow = dict(step)
        handled: set[tuple[int | str, ...]] = {("id",)}
        for name in children:
            if isinstance(step.get(name), list):
                shallow[name] = []
                handled.add((name,))
        rules = _RULES[step_type]
        rules(self, step, path, handled)
        self.shape(model, shallow, path, handled, step_type)

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

    # -- values ------------------------------------------------------------------

    def expr(self, value: Any, path: str) -> bool:
        """Compile `value` when it is an expression; True when it is one.

        Expressions nested inside a literal object or array are compiled too: the
        interpreter evaluates them wherever they sit."""
        if not _is_expr(value):
            if isinstance(value, dict):
                for key, item in value.items():
                    self.expr(item, f"{path}.{key}")
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    self.expr(item, f"{path}[{index}]")
            return False
        if set(value) != {"$expr"}:
            self.add(path, DEFINITION_FIELD_INVALID, "an expression object holds only $expr")
        try:
            compile_with(value["$expr"], self.expressions)
        except ExpressionError as exc:
            self.add(path, exc.code, exc.message)
        return True

    def expr_map(self, value: Any, path: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                self.expr(item, f"{path}.{name}")

    def target(self, target: Any, path: str) -> None:
        if not isinstance(target, str):
            self.add(path, DEFINITION_ASSIGN_TARGET_INVALID, "an assignment target is text")
            return
        root, _, rest = target.partition(".")
        if root not in TARGET_ROOTS or not rest:
            self.add(
                path,
                DEFINITION_ASSIGN_TARGET_INVALID,
                f"{target!r} is not a dotted path under vars., payload. or local.",
            )
            return
        for segment in rest.split("."):
            if segment in FORBIDDEN_SEGMENTS:
                self.add(
                    path,
                    DEFINITION_ASSIGN_TARGET_INVALID,
                    f"{target!r} uses the forbidden segment {segment!r}",
                )
                return
            if not _SEGMENT.fullmatch(segment):
                self.add(
                    path,
                    DEFINITION_ASSIGN_TARGET_INVALID,
                    f"{target!r}: segment {segment!r} is not a plain name "
                    "(letters, digits, _ and -)",
                )
                return

    def assignments(self, value: Any, path: str, *, required: bool = False) -> None:
        """A `{target: expr}` map: every target checked, every expression compiled."""
        if not isinstance(value, dict):
            return
        if required and not value:
            self.add(path, DEFINITION_FIELD_INVALID, "assigns nothing")
        for target, item in value.items():
            self.target(target, f"{path}.{target}")
            self.expr(item, f"{path}.{target}")

    def identifier(self, value: Any, path: str, what: str) -> bool:
        if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
            if value in FORBIDDEN_SEGMENTS:
                self.add(path, DEFINITION_ASSIGN_TARGET_INVALID, f"{what} {value!r} is forbidden")
                return False
            return True
        self.add(
            path,
            DEFINITION_ASSIGN_TARGET_INVALID,
            f"{what} must be a plain identifier (letters, digits, _), got {value!r}",
        )
        return False

    def json_schema(self, schema: dict[str, Any], path: str) -> None:
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            errors = list(cls(cls.META_SCHEMA).iter_errors(schema))
        except Exception as exc:  # a schema odd enough to break the meta-check itself
            self.add(path, DEFINITION_SCHEMA_INVALID, f"not a usable JSON Schema: {exc}")
            return
        for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
            self.add(
                _loc_path(path, error.absolute_path),
                DEFINITION_SCHEMA_INVALID,
                f"not a valid JSON Schema: {error.message}",
            )

    # -- per step type -----------------------------------------------------------

    def assign_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        self.assignments(step.get("assign"), f"{path}.assign", required=True)

    def action_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        spec = self.action(step, path)
        inputs = step.get("input")
        self.expr_map(inputs, f"{path}.input")
        if spec is not None and isinstance(inputs, dict):
            self.action_input(spec, inputs, f"{path}.input")
        if step.get("save_as") is not None:
            self.target(step["save_as"], f"{path}.save_as")
        self.expr(step.get("idempotency_key"), f"{path}.idempotency_key")

    def action(self, step: dict[str, Any], path: str) -> ActionSpec | None:
        name, version = step.get("action"), step.get("version")
        if not isinstance(name, str) or not isinstance(version, int) or isinstance(version, bool):
            return None  # the shape check reports these
        try:
            return lookup(name, version)
        except FlowledgerError as exc:
            if exc.code != "ACTION_UNKNOWN":
                raise
        versions = sorted(v for (n, v) in known_actions() if n == name)
        if versions:
            self.add(
                f"{path}.version",
                DEFINITION_ACTION_UNKNOWN,
                f"action {name} has no version {version}; known versions: {versions}",
            )
        else:
            self.add(f"{path}.action", DEFINITION_ACTION_UNKNOWN, f"unknown action {name!r}")
        return None

    def action_input(self, spec: ActionSpec, inputs: dict[str, Any], path: str) -> None:
        # Only the literal part can be checked now; an expression's value is known
        # when the step runs, so errors about those names are left to run time.
        computed = {name for name, value in inputs.items() if _is_expr(value)}
        literal = {name: value for name, value in inputs.items() if name not in computed}
        try:
            spec.input_model.model_validate(literal)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = tuple(error["loc"])
                if loc and loc[0] in computed:
                    continue
                message = "unknown input" if error["type"] == "extra_forbidden" else error["msg"]
                self.add(
                    _loc_path(path, loc),
                    DEFINITION_ACTION_INPUT_INVALID,
                    f"{spec.name} v{spec.version}: {message}",
                )

    def if_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        if "condition" in step:
            condition = step["condition"]
            if not self.expr(condition, f"{path}.condition") and not isinstance(condition, bool):
                self.add(f"{path}.condition", DEFINITION_FIELD_INVALID, "must be boolean")

    def for_each_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        if "items" in step:
            items = step["items"]
            if not self.expr(items, f"{path}.items") and not isinstance(items, list):
                self.add(f"{path}.items", DEFINITION_FIELD_INVALID, "must be an array")
        if "item_var" in step:
            handled.add(("item_var",))
            item_var = step["item_var"]
            if self.identifier(item_var, f"{path}.item_var", "item_var") and (
                item_var in LOOP_LOCALS
            ):
                self.add(
                    f"{path}.item_var",
                    DEFINITION_FIELD_INVALID,
                    f"{item_var!r} is one of the loop locals ({', '.join(sorted(LOOP_LOCALS))})",
                )

    def try_catch_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        if step.get("capture_error_as") is not None:
            handled.add(("capture_error_as",))
            self.identifier(
                step["capture_error_as"], f"{path}.capture_error_as", "capture_error_as"
            )

    def call_workflow_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        self.expr_map(step.get("input"), f"{path}.input")
        self.assignments(step.get("output"), f"{path}.output")

    def return_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        self.expr(step.get("output"), f"{path}.output")

    def event_wait_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        event_type = step.get("event_type")
        if event_type is None or event_type == "":
            handled.add(("event_type",))
            self.add(
                f"{path}.event_type",
                DEFINITION_WAIT_INCOMPLETE,
                "event.wait needs the event_type it waits for",
            )
        key = step.get("correlation_key")
        if key is None or key == "":
            handled.add(("correlation_key",))
            self.add(
                f"{path}.correlation_key",
                DEFINITION_WAIT_INCOMPLETE,
                "event.wait needs a correlation_key (null is not one)",
            )
        else:
            self.expr(key, f"{path}.correlation_key")
        filters = step.get("filters")
        if isinstance(filters, list):
            for index, item in enumerate(filters):
                if isinstance(item, dict):
                    handled.add(("filters", index, "op"))
                    handled.add(("filters", index, "value"))
                    self.event_filter(item, f"{path}.filters[{index}]")
        self.assignments(step.get("assign"), f"{path}.assign")

    def event_filter(self, item: Mapping[str, Any], path: str) -> None:
        if "op" not in item:
            self.add(f"{path}.op", DEFINITION_FILTER_INVALID, "a filter needs an op")
            return
        op = item["op"]
        if not isinstance(op, str) or op not in FILTER_OPS:
            self.add(
                f"{path}.op",
                DEFINITION_FILTER_INVALID,
                f"unknown filter op {op!r}; known: {' '.join(FILTER_OPS)}",
            )
            return
        has_value = "value" in item
        value = item.get("value")
        where = f"{path}.value"
        if op in _PRESENCE_OPS:
            if has_value:
                self.add(where, DEFINITION_FILTER_INVALID, f"{op} takes no value")
            return
        if not has_value:
            self.add(where, DEFINITION_FILTER_INVALID, f"{op} needs a value")
        elif _is_expr(value):
            self.add(where, DEFINITION_FILTER_INVALID, "a filter value is a literal, not $expr")
        elif op in _ARRAY_OPS and not isinstance(value, list):
            self.add(where, DEFINITION_FILTER_INVALID, f"{op} needs an array value")
        elif op in _NUMERIC_OPS and not _is_number(value):
            self.add(where, DEFINITION_FILTER_INVALID, f"{op} needs a number value")
        elif op in _STRING_OPS and not isinstance(value, str):
            self.add(where, DEFINITION_FILTER_INVALID, f"{op} needs a string value")

    def time_wait_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        has_duration = step.get("duration_ms") is not None
        until = step.get("until")
        if has_duration == (until is not None):
            self.add(
                path,
                DEFINITION_TIME_WAIT_INVALID,
                "time.wait needs exactly one of duration_ms or until",
            )
        if until is not None and not self.expr(until, f"{path}.until") and not _is_iso(until):
            self.add(
                f"{path}.until",
                DEFINITION_FIELD_INVALID,
                "until must be an ISO 8601 time with a UTC offset",
            )
        self.assignments(step.get("assign"), f"{path}.assign")

    def human_task_step(self, step: dict[str, Any], path: str, handled: set[Any]) -> None:
        self.expr(step.get("title"), f"{path}.title")
        self.expr(step.get("description"), f"{path}.description")
        self.expr_map(step.get("context"), f"{path}.context")
        if isinstance(step.get("form_schema"), dict):
            self.json_schema(step["form_schema"], f"{path}.form_schema")
        self.assignments(step.get("assign"), f"{path}.assign")


def _is_iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


_RULES: Final = {
    "assign": _Walker.assign_step,
    "action.call": _Walker.action_step,
    "control.if": _Walker.if_step,
    "control.forEach": _Walker.for_each_step,
    "control.tryCatch": _Walker.try_catch_step,
    "control.callWorkflow": _Walker.call_workflow_step,
    "control.return": _Walker.return_step,
    "event.wait": _Walker.event_wait_step,
    "time.wait": _Walker.time_wait_step,
    "human.task": _Walker.human_task_step,
}
