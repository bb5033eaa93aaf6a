"""The helper functions every expression may call, and the JSON view of values.

Pure: the clock is passed in, nothing here reads the time, the environment or
any shared state.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from jsonata import Utils

from workflows.expressions.budget import StepMeter
from workflows.expressions.errors import EXPR_EVALUATION, EXPR_NOT_SERIALIZABLE, ExpressionError

HELPERS: Final = frozenset({"nowIso", "coalesce", "len", "toString", "append"})

# Producing text or arrays costs work in proportion to their size; charging for it
# keeps a loop that builds large values from running far past the step budget.
_CHARS_PER_STEP: Final = 1024

# Beyond 2**53 a float no longer holds every integer, so it stays a float.
_EXACT_INT_LIMIT: Final = 2**53


class _WrittenNull:
    """A `null` written as an argument of `append` (see validate._mark_written_nulls)."""

    def __repr__(self) -> str:
        return "null"


WRITTEN_NULL: Final = _WrittenNull()


class NotSerializable(Exception):
    """A value with no JSON form (a function, a regex, NaN...)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def plain(value: Any) -> Any:
    """A fresh JSON-only copy of a jsonata value (sequences become lists)."""
    if value is None or value is Utils.NULL_VALUE:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotSerializable(f"the number {value!r}")
        if value.is_integer() and abs(value) < _EXACT_INT_LIMIT:
            # JSON (and JSONata) have one number type: 3.0 is written 3.
            return int(value)
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotSerializable(f"an object key of type {type(key).__name__}")
            out[key] = plain(item)
        return out
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    raise NotSerializable(_describe(value))


def _describe(value: Any) -> str:
    if Utils.is_function(value) or getattr(value, "_jsonata_lambda", False):
        return "a function"
    if hasattr(value, "finditer"):
        return "a regular expression"
    return f"a value of type {type(value).__name__}"


def compact_json(value: Any) -> str:
    """The contract's size measure: compact JSON, non-ASCII kept as written."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def format_now(clock: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ`; a naive clock is taken to be UTC already."""
    moment = clock.astimezone(UTC) if clock.tzinfo is not None else clock
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _is_null(value: Any) -> bool:
    return value is None or value is Utils.NULL_VALUE


# jsonata counts a function's parameters to decide what a higher-order built-in may
# pass it ($reduce wants two); `*args` alone would count as one.
_APPEND_SIGNATURE: Final = inspect.Signature(
    [
        inspect.Parameter("array1", inspect.Parameter.POSITIONAL_ONLY),
        inspect.Parameter("array2", inspect.Parameter.POSITIONAL_ONLY),
    ]
)


def helpers_named_in(source: str) -> frozenset[str]:
    """The helpers `source` may refer to: every one whose name occurs in its text, with
    or without the `$` (validation turns a bare `len(x)` into `$len(x)`); a superset
    of those it calls or passes around, found without walking the tree."""
    return frozenset(name for name in HELPERS if name in source)


def helper_functions(
    clock: datetime, meter: StepMeter, names: frozenset[str] = HELPERS
) -> dict[str, Callable[..., Any]]:
    """The helpers in `names` bound for one evaluation, sharing its clock and meter."""

    def arity(name: str, got: int, expected: int) -> None:
        if got != expected:
            meter.fail(
                ExpressionError(
                    EXPR_EVALUATION,
                    f"{name}() takes {expected} argument{'s' if expected != 1 else ''}, got {got}",
                    expression=meter.expression,
                    function=name,
                )
            )

    def now_iso(*args: Any) -> str:
        arity("nowIso", len(args), 0)
        return format_now(clock)

    def coalesce(*args: Any) -> Any:
        meter.charge(len(args))
        for arg in args:
            if not _is_null(arg):
                return arg
        return None

    def length(*args: Any) -> int:
        arity("len", len(args), 1)
        value = args[0]
        # Only text and arrays have a length; anything else (numbers, objects,
        # missing values) counts as empty.
        if isinstance(value, str | list):
            return len(value)
        return 0

    def to_string(*args: Any) -> str:
        arity("toString", len(args), 1)
        value = args[0]
        if _is_null(value):
            return ""
        if isinstance(value, str):
            return value
        try:
            text = compact_json(plain(value))
        except NotSerializable as exc:
            meter.fail(
                ExpressionError(
                    EXPR_NOT_SERIALIZABLE,
                    f"toString() cannot write {exc.what} as JSON",
                    expression=meter.expression,
                )
            )
        meter.charge(len(text) // _CHARS_PER_STEP)
        return text

    def items(side: Any) -> list[Any]:
        if side is WRITTEN_NULL:
            return [Utils.NULL_VALUE]
        if side is Utils.NULL_VALUE:
            return []
        return list(side) if isinstance(side, list) else [side]

    def append(*args: Any) -> Any:
        # JSONata's $append: a missing side gives the other one back unchanged and a
        # non-array side counts as a one-item array. A null written in the expression
        # is an item, as in JSONata; a null read from the data is an empty list, as
        # the public contract's "append to null" vector says.
        arity("append", len(args), 2)
        first, second = args
        if first is None:
            return Utils.NULL_VALUE if second is WRITTEN_NULL else second
        if second is None:
            return Utils.NULL_VALUE if first is WRITTEN_NULL else first
        out = items(first)
        out.extend(items(second))
        meter.charge(len(out))
        return out

    append.__signature__ = _APPEND_SIGNATURE  # type: ignore[attr-defined]

    every = {
        "nowIso": now_iso,
        "coalesce": coalesce,
        "len": length,
        "toString": to_string,
        "append": append,
    }
    return {name: every[name] for name in names}
