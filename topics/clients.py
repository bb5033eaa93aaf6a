"""Kafka client factories, the only place flowledger makes a Kafka client: every
producer is idempotent with acks=all, every consumer commits by hand, so offsets move
only after the work they cover is durable; every client takes the security settings,
and one to a secured cluster fails fast when the cluster refuses its credentials."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from flowledger.settings import Settings
from topics import kafka_access, kafka_security


def _base(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "client.id": settings.kafka.client_id,
        # Warnings such as "coordinator load in progress" are retried internally.
        "log_level": 3,
        **kafka_security.properties(settings.kafka),
    }
    if str(config["security.protocol"]).lower() != "plaintext":
        kafka_access.check(config, AdminClient)
        config["error_cb"] = kafka_access.raise_refusal
    return config


def producer(settings: Settings, **overrides: Any) -> Producer:
    config = {
        **_base(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # The topics' limit (set by `topics ensure`), not librdkafka's 1,000,000.
        "message.max.bytes": settings.kafka.max_message_bytes,
        **overrides,
    }
    return Producer(config)


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    config = {
        **_base(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        **overrides,
    }
    return Consumer(config)


def admin(settings: Settings, **overrides: Any) -> AdminClient:
    return AdminClient({**_base(settings), **overrides})
