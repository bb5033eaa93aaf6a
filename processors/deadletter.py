"""Dead letters: the refused record unchanged, under its original key, headers and
timestamp, with headers added saying why, when, by which consumer group and where it
came from (UTF-8 strings; a null value stays null). A record over the ingress size
limit is replaced by its digest and an excerpt (the original stays on the ingress
topic, at the source coordinates), so that its dead letter is never too large for the
topic."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from flowledger.settings import RecordSettings
from processors.deadletter_headers import (
    CONSUMER_GROUP,
    ERROR,
    EXCEPTION,
    FAILED_AT,
    FIELD,
    REASON,
    REDRIVE_PREFIX,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TIMESTAMP,
    SOURCE_TOPIC,
    VALUE,
)
from processors.pipeline import EXCERPT_CHARS, MESSAGE_CHARS, IngressRecord, Plan
from schemas.bounded_json import RecordRefused
from topics.producing import Outgoing

__all__ = ["REASON", "SOURCE_OFFSET", "VALUE", "headers", "outgoing", "value"]


def outgoing(
    topic: str,
    plan: Plan,
    refused: RecordRefused,
    limits: RecordSettings,
    group: str = "",
    failed_at: datetime | None = None,
) -> Outgoing:
    record = plan.record
    return Outgoing(
        topic,
        record.key,
        value(record, limits),
        headers(record, refused, limits, group=group, failed_at=failed_at),
        # The original's own time; none known (a broker without timestamps): now.
        timestamp_ms=max(0, round(record.timestamp.timestamp() * 1000)) or None,
    )


def value(record: IngressRecord, limits: RecordSettings) -> bytes | None:
    raw = record.value
    if raw is None or len(raw) <= limits.max_bytes:
        return raw
    return json.dumps(
        {
            "sha256": hashlib.sha256(raw).hexdigest(),
            "bytes": len(raw),
            "excerpt": raw[:EXCERPT_CHARS].decode("utf-8", "replace"),
            "source": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        }
    ).encode()


def headers(
    record: IngressRecord,
    refused: RecordRefused,
    limits: RecordSettings,
    *,
    group: str = "",
    failed_at: datetime | None = None,
) -> list[tuple[str, str | bytes | None]]:
    # The original headers first (its traceparent among them), then why and whence;
    # a record refused before is refused again with fresh reasons, not two sets, but
    # keeps its redrive headers (the loop guard counts them).
    out: list[tuple[str, str | bytes | None]] = [
        (name, raw)
        for name, raw in record.headers
        if not name.startswith("flowledger.") or name.startswith(REDRIVE_PREFIX)
    ]
    when = failed_at or datetime.now(UTC)
    out += [
        (REASON, refused.code.encode()),
        (ERROR, refused.message[:MESSAGE_CHARS].encode("utf-8", "replace")),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
        (SOURCE_TIMESTAMP, record.timestamp.isoformat().encode()),
        (FAILED_AT, when.isoformat().encode()),
        (CONSUMER_GROUP, group.encode()),
    ]
    field = refused.context.get("field")
    if isinstance(field, str):
        out.append((FIELD, field[:MESSAGE_CHARS].encode("utf-8", "replace")))
    exception = refused.context.get("exception")
    if isinstance(exception, str):
        out.append((EXCEPTION, exception.encode()))
    if record.value is not None and len(record.value) > limits.max_bytes:
        out.append((VALUE, b"excerpt"))
    return out
