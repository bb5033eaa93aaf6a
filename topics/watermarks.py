"""Reading where a partition ends, waiting out the moments right after a topic is
created or a broker restarts (topics.kafka_errors), for every reader of a whole topic."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition

from flowledger import retry
from flowledger.errors import ServiceUnavailable
from topics import kafka_errors
from topics.codes import KAFKA_UNAVAILABLE


def high_watermark(consumer: Consumer, topic: str, partition: int, timeout: float) -> int:
    """The end offset of one partition, asked of the broker (never a cached answer)."""

    def ask() -> int:
        _low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout, cached=False
        )
        return int(high)

    try:
        return retry.until_deadline(ask, transient=kafka_errors.transient, seconds=timeout)
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"reading {topic}[{partition}] failed: {exc}", code=KAFKA_UNAVAILABLE
        ) from exc
