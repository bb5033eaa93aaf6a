"""Error codes of records: why an ingress record (or any JSON from outside) is refused.

Stable strings that scripts may match on; docs/errors.md lists them all and is kept
in sync by a test. A comment starting `#:` says what each one means."""

from __future__ import annotations

from typing import Final

#: The record breaks its schema; `field` names where.
RECORD_INVALID: Final = "RECORD_INVALID"
#: The record has a null or empty value.
RECORD_EMPTY: Final = "RECORD_EMPTY"
#: The record is not UTF-8.
RECORD_NOT_UTF8: Final = "RECORD_NOT_UTF8"
#: The record is not JSON.
RECORD_NOT_JSON: Final = "RECORD_NOT_JSON"
#: The record is larger than `records.max_bytes`.
RECORD_TOO_LARGE: Final = "RECORD_TOO_LARGE"
#: The record nests deeper than `records.max_depth`.
RECORD_TOO_DEEP: Final = "RECORD_TOO_DEEP"
#: The record has an integer beyond 64 bits.
RECORD_NUMBER_TOO_LARGE: Final = "RECORD_NUMBER_TOO_LARGE"
#: The record has NaN, Infinity or a number overflowing to it.
RECORD_NUMBER_NOT_FINITE: Final = "RECORD_NUMBER_NOT_FINITE"
