"""Error codes of the Kafka side: topics, reading and producing.

Stable strings that scripts may match on; docs/errors.md lists them all and is kept
in sync by a test. A comment starting `#:` says what each one means."""

from __future__ import annotations

from typing import Final

#: Kafka did not answer within the request timeout.
KAFKA_UNAVAILABLE: Final = "KAFKA_UNAVAILABLE"
#: Kafka refused the client's SASL credentials or TLS certificate.
KAFKA_AUTH_FAILED: Final = "KAFKA_AUTH_FAILED"
#: The Kafka security settings are incomplete (e.g. SASL without a password).
KAFKA_CONFIG_INVALID: Final = "KAFKA_CONFIG_INVALID"
#: A catalogue topic does not exist (run `topics ensure`).
TOPIC_MISSING: Final = "TOPIC_MISSING"
#: Kafka refused to create a topic.
TOPIC_CREATE_FAILED: Final = "TOPIC_CREATE_FAILED"
#: Kafka refused to set a topic's size limit.
TOPIC_CONFIG_FAILED: Final = "TOPIC_CONFIG_FAILED"
#: Kafka did not acknowledge every record published.
PUBLISH_FAILED: Final = "PUBLISH_FAILED"
#: Reading a topic up to its end stopped making progress before the end.
TOPIC_READ_STALLED: Final = "TOPIC_READ_STALLED"
#: The internal routing topics do not have the same number of partitions.
TOPICS_NOT_COPARTITIONED: Final = "TOPICS_NOT_COPARTITIONED"
