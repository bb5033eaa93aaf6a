"""The headers a dead letter carries beside the original's own, and those a redrive adds."""

from __future__ import annotations

REASON = "flowledger.reason"
ERROR = "flowledger.error"
FIELD = "flowledger.field"
EXCEPTION = "flowledger.exception"
# "excerpt" when the value is a digest and excerpt of the original, not the original.
VALUE = "flowledger.value"
SOURCE_TOPIC = "flowledger.source.topic"
SOURCE_PARTITION = "flowledger.source.partition"
SOURCE_OFFSET = "flowledger.source.offset"
SOURCE_TIMESTAMP = "flowledger.source.timestamp"
FAILED_AT = "flowledger.failed_at"
CONSUMER_GROUP = "flowledger.consumer_group"
# Set by `deadletters redrive` on the copy it re-publishes; a copy refused again keeps
# them, so its new dead letter knows how often it was sent back already.
REDRIVE_PREFIX = "flowledger.redrive."
REDRIVE_COUNT = "flowledger.redrive.count"
REDRIVE_SOURCE = "flowledger.redrive.source"
