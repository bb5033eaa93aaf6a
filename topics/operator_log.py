"""Writing the operator audit: one OperatorAction record per run-control request on
flowledger.operators.v1, produced and acknowledged before the command returns."""

from __future__ import annotations

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from schemas.operator import OperatorAction
from topics import clients
from topics.catalogue import OPERATORS
from topics.codes import KAFKA_UNAVAILABLE
from topics.producing import Outgoing, produce_and_flush
from topics.serde import encode


def record(settings: Settings, action: OperatorAction) -> None:
    """Raises ServiceUnavailable when Kafka does not acknowledge the record."""
    producer = clients.producer(settings)
    timeout = settings.kafka.request_timeout_s
    try:
        item = Outgoing(
            settings.topic(OPERATORS), str(action.action_id).encode("utf-8"), encode(action)
        )
        done = produce_and_flush(producer, [item], timeout)
    finally:
        producer.flush(timeout)
    if done.failed:
        raise ServiceUnavailable(
            f"Kafka did not acknowledge the operator audit record: {done.failed[0][1]}",
            code=KAFKA_UNAVAILABLE,
        )
