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
        value = json.loads(raw)
    except RecursionError:
        raise _refuse(RECORD_TOO_DEEP, f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            raise _refuse(
                RECORD_NUMBER_TOO_LARGE, f"an integer has more digits than {MAX_INTEGER}"
            ) from None
        raise _refuse(RECORD_NOT_JSON, f"not JSON: {exc}") from None
    _check(value, max_depth)
    return value


def _check(value: Any, max_depth: int) -> None:
    """Depth and numbers in one walk, without recursion (the value may be deep)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _refuse(RECORD_NUMBER_NOT_FINITE, "NaN and Infinity are not JSON numbers")
            continue
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -MAX_INTEGER - 1 <= item <= MAX_INTEGER:
                raise _refuse(
                    RECORD_NUMBER_TOO_LARGE, f"the integer {str(item)[:20]}… is beyond 64 bits"
                )
            continue
        else:
            continue
        if depth > max_depth:
            raise _refuse(RECORD_TOO_DEEP, f"nested deeper than {max_depth} levels")
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, dict | list | float | int)
        )
