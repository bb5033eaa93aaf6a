"""Taking a batch from a consumer without waiting for it to fill."""

from __future__ import annotations

from confluent_kafka import Consumer, Message


def take(consumer: Consumer, size: int, timeout: float) -> list[Message]:
    """Up to `size` records of what is there now; when nothing is, wait up to `timeout`
    for the first record only. `consume(n, t)` waits out `t` unless `n` records
    arrive, so a lone record would wait the whole timeout behind an empty batch."""
    messages = consumer.consume(size, 0)
    if messages:
        return messages
    messages = consumer.consume(1, timeout)
    if messages and size > 1:
        messages.extend(consumer.consume(size - 1, 0))
    return messages
