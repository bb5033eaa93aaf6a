"""Dead letters: the refused record unchanged, under its original key and headers, with
headers added saying why and where it came from. A record over the ingress size limit is replaced by
its digest and an excerpt (the original stays on the ingress topic, at the source
coordinates), so that its dead letter is never too large for the topic."""

from __future__ import annotations

import hashlib
import json

from flowledger.settings import RecordSettings
from processors.pipeline import EXCERPT_CHARS, MESSAGE_CHARS, IngressRecord, Plan
from schemas.bounded_json import RecordRefused
from topics.producing import Outgoing

REASON = "flowledger.reason"
ERROR = "flowledger.error"
FIELD = "flowledger.field"
EXCEPTION = "flowledger.exception"
# "excerpt" when the value is a digest and excerpt of the original, not the original.
VALUE = "flowledger.value"
SOURCE_TOPIC = "flowledger.source.topic"
SOURCE_PARTITION = "flowledger.source.partition"
SOURCE_OFFSET = "flowledger.source.offset"


def outgoing(topic: str, plan: Plan, refused: RecordRefused, limits: RecordSettings) -> Outgoing:
    record = plan.record
    return Outgoing(topic, record.key, value(record, limits), headers(record, refused, limits))


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
    record: IngressRecord, refused: RecordRefused, limits: RecordSettings
) -> list[tuple[str, str | bytes | None]]:
    # The original headers first (its traceparent among them), then why and whence;
    # a record refused before is refused again with fresh reasons, not two sets.
    out: list[tuple[str, str | bytes | None]] = [
        (name, raw) for name, raw in record.headers if not name.startswith("flowledger.")
    ]
    out += [
        (REASON, refused.code.encode()),
        (ERROR, refused.message[:MESSAGE_CHARS].encode("utf-8", "replace")),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
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
