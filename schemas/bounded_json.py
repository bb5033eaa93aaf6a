"""JSON from outside, parsed within limits: a size, a nesting depth, and only numbers
that survive the trip through Python, SQL and Temporal unchanged. Whatever is past a
limit is refused with its own code instead of raising out of the caller."""

from __future__ import annotations

import json
import math
from typing import Any

from flowledger.errors import InvalidInput
from schemas.codes import (
    RECORD_EMPTY,
    RECORD_INVALID,
    RECORD_NOT_JSON,
    RECORD_NOT_UTF8,
    RECORD_NUMBER_NOT_FINITE,
    RECORD_NUMBER_TOO_LARGE,
    RECORD_TOO_DEEP,
    RECORD_TOO_LARGE,
)

# Integers SQLite and every 64-bit JSON reader keep exactly; beyond this a value would
# come back changed from some table or client, so it is refused rather than bent.
MAX_INTEGER = 2**63 - 1
# For our own records (runtime events carry event payloads a few levels down); under
# the interpreter's recursion limit, so the decoder itself never overflows.
INTERNAL_MAX_DEPTH = 512


class RecordRefused(InvalidInput):
    """A record that does not satisfy its schema or the limits. ``problems`` lists every
    field at fault as {"field", "reason"}; the first is repeated as ``field``/``reason``."""

    code = RECORD_INVALID


def _refuse(code: str, message: str) -> RecordRefused:
    return RecordRefused(message, code=code, field="(record)", reason=message)


class _Unrepresentable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _integer(text: str) -> int:
    # Checked before converting: a 5,001-digit integer is refused, not converted.
    value = int(text) if len(text) <= 20 else MAX_INTEGER + 1
    if not -MAX_INTEGER - 1 <= value <= MAX_INTEGER:
        raise _Unrepresentable(
            RECORD_NUMBER_TOO_LARGE, f"the integer {text[:20]}… is beyond 64 bits"
        )
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unrepresentable(RECORD_NUMBER_NOT_FINITE, f"{text[:20]} overflows to infinity")
    return value


def _constant(name: str) -> Any:
    raise _Unrepresentable(RECORD_NUMBER_NOT_FINITE, f"{name} is not a JSON number")


# Numbers are checked as they are parsed (the hooks run in the C scanner, once per
# number), so a valid record costs one parse and no second walk.
_DECODER = json.JSONDecoder(parse_int=_integer, parse_float=_float, parse_constant=_constant)


def parse_json(
    raw: bytes | str | None, *, max_bytes: int | None = None, max_depth: int = INTERNAL_MAX_DEPTH
) -> Any:
    """The decoded value, or RecordRefused with one of the RECORD_* codes above."""
    if raw is None or len(raw) == 0:
        raise _refuse(RECORD_EMPTY, "the record has no value")
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if max_bytes is not None and size > max_bytes:
        raise _refuse(RECORD_TOO_LARGE, f"the record has {size} bytes, more than {max_bytes}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refuse(RECORD_NOT_UTF8, f"not UTF-8: {exc}") from None
    try:
        value = _DECODER.decode(raw)
    except _Unrepresentable as exc:
        raise _refuse(exc.code, exc.message) from None
    except RecursionError:
        raise _refuse(RECORD_TOO_DEEP, f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise _refuse(RECORD_NOT_JSON, f"not JSON: {exc}") from None
    # Fewer brackets than the limit cannot nest past it: most records need no walk.
    if raw.count("{") + raw.count("[") > max_depth and _depth(value) > max_depth:
        raise _refuse(RECORD_TOO_DEEP, f"nested deeper than {max_depth} levels")
    return value


def _depth(value: Any) -> int:
    """How deep objects and arrays nest, without recursion (the value may be deep)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest if isinstance(value, dict | list) else 0
