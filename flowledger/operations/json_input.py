"""JSON given on the command line, in a file or in an API request body, parsed within
the record limits (size, depth, exact numbers), so no input can crash a command or a
request: it is refused (exit 2, or a 4xx answer)."""

from __future__ import annotations

from typing import Any

from flowledger.errors import InvalidInput
from flowledger.settings import RecordSettings
from schemas.bounded_json import INTERNAL_MAX_DEPTH, RecordRefused, parse_json


def parse(
    text: str | bytes,
    what: str,
    limits: RecordSettings,
    *,
    max_bytes: int | None = None,
    deep: bool = False,
    code: str | None = None,
    **context: Any,
) -> Any:
    """Refused input keeps the command's usual code; ``reason`` names the limit.
    ``deep`` is for documents nested by design (definitions), bounded only by what the
    decoder survives; their own nesting rules are their validator's to check."""
    try:
        return parse_json(
            text,
            max_bytes=max_bytes or limits.max_bytes,
            max_depth=INTERNAL_MAX_DEPTH if deep else limits.max_depth,
        )
    except RecordRefused as exc:
        raise InvalidInput(
            f"{what} is not acceptable JSON: {exc.message}",
            code=code or InvalidInput.code,
            reason=exc.code,
            **context,
        ) from None
