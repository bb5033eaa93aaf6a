"""Definitions nested to a chosen depth, built as text so that any depth can be
written (json.dumps itself recurses), for the nesting-limit tests."""

from __future__ import annotations

import json
from typing import Any

# Step types cycled through on the way down: each nests its next level differently.
WRAPPERS = ("control.if", "control.tryCatch", "control.forEach", "control.if-else")


def _open(kind: str, level: int) -> tuple[str, str]:
    sid = f'"id": "s{level}"'
    if kind == "control.if":
        return f'{{{sid}, "type": "control.if", "condition": true, "then": [', "]}"
    if kind == "control.if-else":
        return (
            f'{{{sid}, "type": "control.if", "condition": {{"$expr": "1 = 2"}}, "then": [], '
            '"else": [',
            "]}",
        )
    if kind == "control.tryCatch":
        return f'{{{sid}, "type": "control.tryCatch", "try": [', '], "catch": []}'
    return (
        f'{{{sid}, "type": "control.forEach", "items": [1], "item_var": "it{level}", "body": [',
        "]}",
    )


def deep_text(levels: int, literal_depth: int = 0, definition_id: str = "deep") -> str:
    """`levels` levels of steps (the innermost an assign of vars.done), the innermost
    assigning `vars.deep` a literal of `literal_depth` nested objects as well."""
    heads, tails = [], []
    for level in range(1, levels):
        head, tail = _open(WRAPPERS[(level - 1) % len(WRAPPERS)], level)
        heads.append(head)
        tails.append(tail)
    literal = (
        "{}"
        if literal_depth < 1
        else '{"d": ' * (literal_depth - 1) + "{}" + "}" * (literal_depth - 1)
    )
    leaf = (
        f'{{"id": "s{levels}", "type": "assign", '
        f'"assign": {{"vars.done": true, "vars.deep": {literal}}}}}'
    )
    steps = "".join(heads) + leaf + "".join(reversed(tails))
    return (
        f'{{"id": "{definition_id}", "version": 1, "tenant": "acme", "name": "deep", '
        f'"steps": [{steps}]}}'
    )


def deep(levels: int, literal_depth: int = 0, definition_id: str = "deep") -> dict[str, Any]:
    document: dict[str, Any] = json.loads(deep_text(levels, literal_depth, definition_id))
    return document


def json_levels(value: Any) -> int:
    """Levels of objects and arrays, without recursion; a scalar is 0."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest
