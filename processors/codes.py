"""Error codes of the ingress processor, as audited and dead-lettered.

Stable strings that scripts may match on; docs/errors.md lists them all and is kept
in sync by a test. A comment starting `#:` says what each one means."""

from __future__ import annotations

from typing import Final

#: No correlation key: audited, not routed to waits (triggers still run).
CORRELATION_MISSING: Final = "CORRELATION_MISSING"
#: The correlation derivation paths cannot be used (a start-up error).
CORRELATION_CONFIG_INVALID: Final = "CORRELATION_CONFIG_INVALID"
#: Handling the record failed unexpectedly (a bug; the exception is in the dead letter).
PROCESSING_FAILED: Final = "PROCESSING_FAILED"
#: A definition's trigger refused the event (mapping or input schema).
TRIGGER_MAPPING_FAILED: Final = "TRIGGER_MAPPING_FAILED"
#: A trigger's payload_mapping is not an object.
TRIGGER_MAPPING_INVALID: Final = "TRIGGER_MAPPING_INVALID"
#: `deadletters show` or `redrive --offsets` names coordinates with no dead letter.
DEADLETTER_NOT_FOUND: Final = "DEADLETTER_NOT_FOUND"
#: A redrive stopped part-way: Kafka did not take every record; the rest are sent
#: when the same redrive is run again.
REDRIVE_INCOMPLETE: Final = "REDRIVE_INCOMPLETE"
