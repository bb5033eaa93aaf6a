"""Event-wait filters ({path, op, value}) with the seed semantics: strict equality,
numeric comparisons only between numbers, string operators only on strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MISSING = object()


def lookup(payload: Any, path: str) -> Any:
    current = payload
    for segment in path.split("."):
        if isinstance(current, Mapping) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return _MISSING
    return current


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    # Strict: 1 is not true, 1 is not "1"; 1 and 1.0 are the same number.
    if _number(a) and _number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def matches(payload: Mapping[str, Any], flt: Mapping[str, Any]) -> bool:
    found = lookup(payload, str(flt.get("path", "")))
    op = flt.get("op")
    value = flt.get("value")
    if op == "exists":
        return found is not _MISSING
    if op == "not_exists":
        return found is _MISSING
    if found is _MISSING:
        return False
    if op == "=":
        return _same(found, value)
    if op == "!=":
        return not _same(found, value)
    if op == "in":
        return isinstance(value, list) and any(_same(found, v) for v in value)
    if op == "not_in":
        return isinstance(value, list) and not any(_same(found, v) for v in value)
    if op in (">", ">=", "<", "<="):
        if not (_number(found) and _number(value)):
            return False
        return {
            ">": found > value,
            ">=": found >= value,
            "<": found < value,
            "<=": found <= value,
        }[op]
    if op in ("contains", "starts_with", "ends_with"):
        if not (isinstance(found, str) and isinstance(value, str)):
            return False
        if op == "contains":
            return value in found
        if op == "starts_with":
            return found.startswith(value)
        return found.endswith(value)
    return False


def all_match(payload: Mapping[str, Any], filters: list[Mapping[str, Any]]) -> bool:
    return all(matches(payload, f) for f in filters)
