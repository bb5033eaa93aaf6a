"""Dead letters: the refused record unchanged, under its original key, with headers
saying why and where it came from."""

from __future__ import annotations

from processors.pipeline import IngressRecord
from topics.serde import RecordRefused

REASON = "flowledger.reason"
ERROR = "flowledger.error"
FIELD = "flowledger.field"
SOURCE_TOPIC = "flowledger.source.topic"
SOURCE_PARTITION = "flowledger.source.partition"
SOURCE_OFFSET = "flowledger.source.offset"


def headers(record: IngressRecord, refused: RecordRefused) -> list[tuple[str, str | bytes | None]]:
    out: list[tuple[str, str | bytes | None]] = [
        (REASON, refused.code.encode()),
        (ERROR, refused.message.encode("utf-8", "replace")),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
    ]
    field = refused.context.get("field")
    if isinstance(field, str):
        out.append((FIELD, field.encode("utf-8", "replace")))
    return out
