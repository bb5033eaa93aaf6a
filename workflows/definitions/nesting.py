"""How deep a definition nests, measured without recursion: the steps inside steps
(`workflows.max_definition_nesting`) and the JSON document as a whole
(`MAX_JSON_DEPTH`). Publish checks both before anything recursive meets the document,
so a definition too deep to run is refused, never a crash or a run that cannot start.

Both are found in a parsed document and, for a text too deep to parse at all, in the
text itself, so the refusal names the same step path either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

# A definition crosses the Temporal boundary inside the workflow input (RunInput) and
# an activity result (DefinitionReply), both converted by pydantic-core: its JSON
# parser refuses more than 201 levels and its serializer more than 255, so a run of a
# deeper document never starts. 128 levels leave room for the wrapping messages.
MAX_JSON_DEPTH: Final = 128


@dataclass(frozen=True)
class TooDeep:
    """Where a limit is passed: the step path, or the JSON path of the value."""

    path: str
    message: str


def _step_lists(step: Mapping[str, Any], path: str, children: tuple[str, ...]) -> Iterator[Any]:
    for name in children:
        nested = step.get(name)
        if isinstance(nested, list):
            yield nested, f"{path}.{name}.steps"


def step_nesting(
    document: Mapping[str, Any], limit: int, children: Mapping[str, tuple[str, ...]]
) -> TooDeep | None:
    """The first step (in document order) nested more than `limit` levels deep; the
    top-level steps are level 1. `children` maps a step type to its step-list fields."""
    steps = document.get("steps")
    if not isinstance(steps, list):
        return None
    stack: list[tuple[list[Any], str, int]] = [(steps, "root.steps", 1)]
    while stack:
        items, prefix, level = stack.pop()
        for index in range(len(items) - 1, -1, -1):
            step = items[index]
            if not isinstance(step, dict):
                continue
            path = f"{prefix}[{index}]"
            if level > limit:
                return _too_many_levels(path, limit)
            kind = step.get("type")
            names = children.get(kind, ()) if isinstance(kind, str) else ()
            for nested, nested_prefix in reversed(list(_step_lists(step, path, names))):
                stack.append((nested, nested_prefix, level + 1))
    return None


def _too_many_levels(path: str, limit: int) -> TooDeep:
    return TooDeep(
        path,
        f"steps nest more than {limit} levels deep here (workflows.max_definition_nesting)",
    )


def json_depth(
    document: Any, child_names: frozenset[str], limit: int = MAX_JSON_DEPTH
) -> TooDeep | None:
    """The first value (depth-first) that puts the document past `limit` levels of
    objects and arrays, the document itself being level 1. Its path is written as
    problem paths are: a nested step list `then` of a step is `.then.steps`."""
    # (value, path, depth, is a step list, is a step)
    stack: list[tuple[Any, str, int, bool, bool]] = [(document, "root", 1, False, False)]
    while stack:
        value, path, depth, is_list, is_step = stack.pop()
        if not isinstance(value, dict | list):
            continue
        if depth > limit:
            return _json_too_deep(path, limit)
        entries: list[tuple[Any, str, int, bool, bool]] = []
        if isinstance(value, list):
            for index, item in enumerate(value):
                entries.append((item, f"{path}[{index}]", depth + 1, False, is_list))
        else:
            top = path == "root"
            for key, item in value.items():
                if top and key == "steps":
                    entries.append((item, "root.steps", depth + 1, True, False))
                elif is_step and key in child_names and isinstance(item, list):
                    entries.append((item, f"{path}.{key}.steps", depth + 1, True, False))
                else:
                    entries.append((item, f"{path}.{key}", depth + 1, False, False))
        stack.extend(reversed(entries))
    return None


def _json_too_deep(path: str, limit: int) -> TooDeep:
    return TooDeep(
        path,
        f"the document nests more than {limit} levels of objects and arrays here "
        "(the limit keeps a run's input within what Temporal's data converter carries)",
    )


def scan_text(
    text: str, limit: int, child_names: frozenset[str], json_limit: int = MAX_JSON_DEPTH
) -> TooDeep | None:
    """`step_nesting`, then `json_depth`, on JSON text that may be too deep to parse.

    Only the structure is read (strings are skipped, numbers and literals ignored), so
    any depth costs one pass and no recursion. A step list is `steps` at the top or a
    field named in `child_names` of a step; the text is assumed well-formed enough to
    have been refused only for its depth.
    """
    # Each open container: [kind, path, step level, is a step list, is a step, key]
    stack: list[list[Any]] = []
    pending_key: str | None = None
    deepest: TooDeep | None = None
    position, end = 0, len(text)
    while position < end:
        char = text[position]
        if char == '"':
            close = _string_end(text, position)
            if stack and stack[-1][0] == "{" and pending_key is None:
                pending_key = _string_value(text[position : close + 1])
            position = close + 1
            continue
        if char in "{[":
            path, level, in_step_list, is_step = _entering(stack, pending_key, child_names)
            if is_step and level > limit:
                return _too_many_levels(path, limit)
            if deepest is None and len(stack) + 1 > json_limit:
                deepest = _json_too_deep(path, json_limit)
            stack.append([char, path, level, in_step_list, is_step, 0])
            pending_key = None
        elif char in "}]":
            if stack:
                stack.pop()
        elif char == ",":
            if stack and stack[-1][0] == "[":
                stack[-1][5] += 1
            pending_key = None
        position += 1
    return deepest


def _entering(
    stack: list[list[Any]], key: str | None, child_names: frozenset[str]
) -> tuple[str, int, bool, bool]:
    """(path, step level, is a step list, is a step) of a container about to open."""
    if not stack:
        return "root", 0, False, False
    kind, path, level, parent_is_list, parent_is_step, index = stack[-1]
    if kind == "[":
        child_path = f"{path}[{index}]"
        return child_path, level, False, parent_is_list
    child_path = f"{path}.{key}"
    top = len(stack) == 1
    is_list = (top and key == "steps") or (parent_is_step and key in child_names)
    if is_list:
        # Step paths write a nested list as `.then.steps`, as the walk does.
        return (child_path if top else f"{child_path}.steps"), level + 1, True, False
    return child_path, level, False, False


def _string_end(text: str, start: int) -> int:
    position = start + 1
    while True:
        close = text.find('"', position)
        if close < 0:
            return len(text) - 1
        backslashes = 0
        while text[close - 1 - backslashes] == "\\":
            backslashes += 1
        if backslashes % 2 == 0:
            return close
        position = close + 1


def _string_value(literal: str) -> str:
    try:
        value = json.loads(literal)
    except ValueError:
        return literal.strip('"')
    return value if isinstance(value, str) else literal
