"""Reading the dead-letter topic back: each refused record with why it was refused
(the reason headers processors/deadletter.py writes) and the tenant its value names,
when it names one, so that a reader scoped to tenants sees only theirs."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from flowledger.settings import Settings
from processors.deadletter import (
    ERROR,
    EXCEPTION,
    FIELD,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    VALUE,
)
from topics.catalogue import DEADLETTER
from topics.reader import ReadRecord, read_all


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _named(value: str, name: str) -> str | None:
    """A top-level string field of the refused value, if it is a JSON object at all."""
    try:
        document = json.loads(value)
    except ValueError:
        return None
    found = document.get(name) if isinstance(document, dict) else None
    return found if isinstance(found, str) and found.strip() else None


def entry(record: ReadRecord) -> dict[str, Any]:
    h = record.headers
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key,
        "reason": h.get(REASON),
        "error": h.get(ERROR),
        "field": h.get(FIELD),
        "exception": h.get(EXCEPTION),
        "excerpt": h.get(VALUE) == "excerpt",
        "source": {
            "topic": h.get(SOURCE_TOPIC),
            "partition": _int(h.get(SOURCE_PARTITION)),
            "offset": _int(h.get(SOURCE_OFFSET)),
        },
        "tenant": _named(record.value, "tenant"),
        "event_id": _named(record.value, "event_id"),
        "event_type": _named(record.value, "event_type"),
        "value": record.value,
        "timestamp_ms": record.timestamp_ms,
    }


def list_deadletters(
    settings: Settings,
    *,
    tenants: Collection[str] | None = None,
    reason: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Dead letters, oldest first; with ``tenants``, only those whose value
    names one of them (a record too broken to name a tenant belongs to none)."""
    out = []
    for record in read_all(settings, settings.topic(DEADLETTER)):
        item = entry(record)
        if tenants is not None and item["tenant"] not in tenants:
            continue
        if reason is not None and item["reason"] != reason:
            continue
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out
