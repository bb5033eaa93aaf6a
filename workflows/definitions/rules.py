"""The publish-time rule of each step type: the cross-field checks its pydantic
model cannot express (assignment targets, filter op/value pairs, known actions...).
Each is registered with its step type in `workflows.step_types`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from schemas.runtime import FILTER_OPS
from workflows.actions.spec import ActionSpec
from workflows.codes import (
    DEFINITION_ACTION_INPUT_INVALID,
    DEFINITION_ACTION_UNKNOWN,
    DEFINITION_FIELD_INVALID,
    DEFINITION_FILTER_INVALID,
    DEFINITION_TIME_WAIT_INVALID,
    DEFINITION_WAIT_INCOMPLETE,
)
from workflows.definitions.checks import (
    ARRAY_OPS,
    LOOP_LOCALS,
    NUMERIC_OPS,
    PRESENCE_OPS,
    STRING_OPS,
    Checker,
    is_expr,
    is_iso,
    is_number,
    loc_path,
)
from workflows.filters import path_segments


def assign_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    c.assignments(step.get("assign"), f"{path}.assign", required=True)


def action_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    spec = _action(c, step, path)
    inputs = step.get("input")
    c.expr_map(inputs, f"{path}.input")
    if spec is not None and isinstance(inputs, dict):
        _action_input(c, spec, inputs, f"{path}.input")
    if step.get("save_as") is not None:
        c.target(step["save_as"], f"{path}.save_as")
    c.expr(step.get("idempotency_key"), f"{path}.idempotency_key")


def _action(c: Checker, step: dict[str, Any], path: str) -> ActionSpec | None:
    name, version = step.get("action"), step.get("version")
    if not isinstance(name, str) or not isinstance(version, int) or isinstance(version, bool):
        return None  # the shape check reports these
    spec = c.actions.get((name, version))
    if spec is not None:
        return spec
    versions = sorted(v for (n, v) in c.actions if n == name)
    if versions:
        c.add(
            f"{path}.version",
            DEFINITION_ACTION_UNKNOWN,
            f"action {name} has no version {version}; known versions: {versions}",
        )
    else:
        c.add(f"{path}.action", DEFINITION_ACTION_UNKNOWN, f"unknown action {name!r}")
    return None


def _action_input(c: Checker, spec: ActionSpec, inputs: dict[str, Any], path: str) -> None:
    # Only the literal part can be checked now; an expression's value is known
    # when the step runs, so errors about those names are left to run time.
    computed = {name for name, value in inputs.items() if is_expr(value)}
    literal = {name: value for name, value in inputs.items() if name not in computed}
    try:
        spec.input_model.model_validate(literal)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            if loc and loc[0] in computed:
                continue
            message = "unknown input" if error["type"] == "extra_forbidden" else error["msg"]
            c.add(
                loc_path(path, loc),
                DEFINITION_ACTION_INPUT_INVALID,
                f"{spec.name} v{spec.version}: {message}",
            )


def if_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    if "condition" in step:
        condition = step["condition"]
        if not c.expr(condition, f"{path}.condition") and not isinstance(condition, bool):
            c.add(f"{path}.condition", DEFINITION_FIELD_INVALID, "must be boolean")


def for_each_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    if "items" in step:
        items = step["items"]
        if not c.expr(items, f"{path}.items") and not isinstance(items, list):
            c.add(f"{path}.items", DEFINITION_FIELD_INVALID, "must be an array")
    if "item_var" in step:
        handled.add(("item_var",))
        item_var = step["item_var"]
        if c.identifier(item_var, f"{path}.item_var", "item_var") and (item_var in LOOP_LOCALS):
            c.add(
                f"{path}.item_var",
                DEFINITION_FIELD_INVALID,
                f"{item_var!r} is one of the loop locals ({', '.join(sorted(LOOP_LOCALS))})",
            )


def try_catch_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    if step.get("capture_error_as") is not None:
        handled.add(("capture_error_as",))
        c.identifier(step["capture_error_as"], f"{path}.capture_error_as", "capture_error_as")


def call_workflow_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    c.expr_map(step.get("input"), f"{path}.input")
    c.assignments(step.get("output"), f"{path}.output")


def return_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    c.expr(step.get("output"), f"{path}.output")


def _wait_needs(
    c: Checker, step: dict[str, Any], path: str, handled: set[Any], name: str, what: str
) -> bool:
    """False (and reported) when the wait's `name` is missing, null or empty."""
    if step.get(name) is None or step.get(name) == "":
        handled.add((name,))
        c.add(f"{path}.{name}", DEFINITION_WAIT_INCOMPLETE, f"event.wait needs {what}")
        return False
    return True


def event_wait_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    _wait_needs(c, step, path, handled, "event_type", "the event_type it waits for")
    if _wait_needs(
        c, step, path, handled, "correlation_key", "a correlation_key (null is not one)"
    ):
        c.expr(step["correlation_key"], f"{path}.correlation_key")
    filters = step.get("filters")
    if isinstance(filters, list):
        for index, item in enumerate(filters):
            if isinstance(item, dict):
                handled.add(("filters", index, "op"))
                handled.add(("filters", index, "value"))
                _event_filter(c, item, f"{path}.filters[{index}]")
    c.assignments(step.get("assign"), f"{path}.assign")


def _event_filter(c: Checker, item: Mapping[str, Any], path: str) -> None:
    field_path = item.get("path")
    if isinstance(field_path, str) and field_path and path_segments(field_path) is None:
        c.add(
            f"{path}.path",
            DEFINITION_FILTER_INVALID,
            f"filter path {field_path!r} has an empty segment "
            "(after an optional leading `$.` or `.`, names are separated by single dots)",
        )
    if "op" not in item:
        c.add(f"{path}.op", DEFINITION_FILTER_INVALID, "a filter needs an op")
        return
    op = item["op"]
    if not isinstance(op, str) or op not in FILTER_OPS:
        c.add(
            f"{path}.op",
            DEFINITION_FILTER_INVALID,
            f"unknown filter op {op!r}; known: {' '.join(FILTER_OPS)}",
        )
        return
    has_value = "value" in item
    value = item.get("value")
    where = f"{path}.value"
    if op in PRESENCE_OPS:
        if has_value:
            c.add(where, DEFINITION_FILTER_INVALID, f"{op} takes no value")
        return
    if not has_value:
        c.add(where, DEFINITION_FILTER_INVALID, f"{op} needs a value")
    elif is_expr(value):
        c.add(where, DEFINITION_FILTER_INVALID, "a filter value is a literal, not $expr")
    elif op in ARRAY_OPS and not isinstance(value, list):
        c.add(where, DEFINITION_FILTER_INVALID, f"{op} needs an array value")
    elif op in NUMERIC_OPS and not is_number(value):
        c.add(where, DEFINITION_FILTER_INVALID, f"{op} needs a number value")
    elif op in STRING_OPS and not isinstance(value, str):
        c.add(where, DEFINITION_FILTER_INVALID, f"{op} needs a string value")


def time_wait_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    has_duration = step.get("duration_ms") is not None
    until = step.get("until")
    if has_duration == (until is not None):
        c.add(
            path,
            DEFINITION_TIME_WAIT_INVALID,
            "time.wait needs exactly one of duration_ms or until",
        )
    if until is not None and not c.expr(until, f"{path}.until") and not is_iso(until):
        c.add(
            f"{path}.until",
            DEFINITION_FIELD_INVALID,
            "until must be an ISO 8601 time with a UTC offset",
        )
    c.assignments(step.get("assign"), f"{path}.assign")


def human_task_step(c: Checker, step: dict[str, Any], path: str, handled: set[Any]) -> None:
    c.expr(step.get("title"), f"{path}.title")
    c.expr(step.get("description"), f"{path}.description")
    c.expr_map(step.get("context"), f"{path}.context")
    if isinstance(step.get("form_schema"), dict):
        c.json_schema(step["form_schema"], f"{path}.form_schema")
    c.assignments(step.get("assign"), f"{path}.assign")
