"""The one test of whether a Kafka error will go away by itself. Right after a topic is
created its leader may not be elected yet; a group the broker has not placed yet answers
NOT_COORDINATOR; a broker restarting refuses connections: all of these pass."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

_PASSING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)


def transient(exc: BaseException) -> bool:
    if not isinstance(exc, KafkaException):
        return False
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _PASSING)
