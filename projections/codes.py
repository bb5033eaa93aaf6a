"""Error codes of the projections: the database, projection errors, replay and audit.

Stable strings that scripts may match on; docs/errors.md lists them all and is kept
in sync by a test. A comment starting `#:` says what each one means."""

from __future__ import annotations

from typing import Final

#: The projection database did not answer.
DATABASE_UNAVAILABLE: Final = "DATABASE_UNAVAILABLE"
#: The projection database refused the password or the TLS connection.
DATABASE_AUTH_FAILED: Final = "DATABASE_AUTH_FAILED"
#: The projector's Kafka client hit a fatal error.
KAFKA_FATAL: Final = "KAFKA_FATAL"
#: A record's key does not match its value (a projection error).
RECORD_KEY_INVALID: Final = "RECORD_KEY_INVALID"
#: The database refused a row built from the record (a projection error).
RECORD_REFUSED_BY_DATABASE: Final = "RECORD_REFUSED_BY_DATABASE"
#: `audit why` was given a key it cannot parse.
AUDIT_KEY_INVALID: Final = "AUDIT_KEY_INVALID"
#: `audit why`: no such row.
AUDIT_ROW_NOT_FOUND: Final = "AUDIT_ROW_NOT_FOUND"
#: `audit why`: no such table.
AUDIT_TABLE_UNKNOWN: Final = "AUDIT_TABLE_UNKNOWN"
#: A replay cut names offsets that do not exist.
REPLAY_OFFSETS_INVALID: Final = "REPLAY_OFFSETS_INVALID"
#: Reading the log for a replay stopped making progress.
REPLAY_READ_STALLED: Final = "REPLAY_READ_STALLED"
#: A helper process of a rebuild failed or was killed; the rebuild did not finish.
REBUILD_HELPER_FAILED: Final = "REBUILD_HELPER_FAILED"
#: A shadow schema is not supported on this database.
REPLAY_SHADOW_UNSUPPORTED: Final = "REPLAY_SHADOW_UNSUPPORTED"
