"""Canonical JSON of a definition and its hash.

A run pins the hash of the definition it started on, so the same content must
always hash the same however its keys were ordered or spaced when authored.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(document: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII kept as is; NaN and infinities are
    refused (ValueError) because they are not JSON and would not round-trip."""
    return json.dumps(
        document,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def definition_hash(document: Any) -> str:
    """SHA-256 (hex) of the UTF-8 canonical JSON."""
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
