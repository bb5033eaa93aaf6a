"""Event-wait filters ({path, op, value}) with the seed semantics: strict equality,
numeric comparisons only between numbers, string operators only on strings; a path may
start with `$.` or `.`; a missing field equals nothing and is in no list.

Walking into arrays by index (`items.0.id`) is this runtime's extension of the seed's
paths, which only walk objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MISSING = object()


# Longest first: `$.a` is `a`, not `.a`.
_ROOT_PREFIXES = ("$.", ".")


def path_segments(path: str) -> list[str] | None:
    """The field names of a filter path, or None when one of them is empty.

    `$.a.b`, `.a.b` and `a.b` are the same path; `a..b`, `a.` and `$..a` have an
    empty segment, which publish refuses (a filter on such a path matches nothing).
    """
    for prefix in _ROOT_PREFIXES:
        if path.startswith(prefix):
            path = path[len(prefix) :]
            break
    segments = path.split(".")
    if any(segment == "" for segment in segments):
        return None
    return segments


def lookup(payload: Any, path: str) -> Any:
    segments = path_segments(path)
    if segments is None:
        return _MISSING
    current = payload
    for segment in segments:
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
    path = str(flt.get("path", ""))
    if path_segments(path) is None:
        # Refused at publish; a definition published before that rule matches nothing.
        return False
    found = lookup(payload, path)
    op = flt.get("op")
    value = flt.get("value")
    if op == "exists":
        return found is not _MISSING
    if op == "not_exists":
        return found is _MISSING
    if found is _MISSING:
        # A missing value equals nothing and is in no list; it is no number or text.
        return op in ("!=", "not_in") and (op != "not_in" or isinstance(value, list))
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
