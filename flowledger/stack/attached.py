"""Readiness of services the stack attaches to rather than starts: asked through the
same clients the components use, with the security settings, so a cluster that
needs TLS or credentials answers the probe, and one that refuses them stops `up` at
once with its *_AUTH_FAILED error instead of a wait for the deadline."""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaException
from sqlalchemy import text
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from flowledger.errors import AuthenticationFailed, ServiceUnavailable
from flowledger.settings import Settings
from flowledger.stack.state import ServiceState
from projections import db
from topics import clients
from workflows.client import connect


def probe(service: ServiceState, settings: Settings) -> bool:
    if service.name == "kafka":
        return _kafka(service.endpoint, settings)
    if service.name == "temporal":
        return _temporal(service.endpoint, settings)
    return _database(service.endpoint, settings)


def _kafka(endpoint: str, settings: Settings) -> bool:
    own = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": endpoint})}
    )
    try:
        return bool(clients.admin(own).list_topics(timeout=2).brokers)
    except KafkaException:
        return False


def _temporal(endpoint: str, settings: Settings) -> bool:
    own = settings.model_copy(
        update={"temporal": settings.temporal.model_copy(update={"address": endpoint})}
    )

    async def ask() -> bool:
        client = await connect(own)
        return bool(await client.workflow_service.get_system_info(GetSystemInfoRequest()))

    try:
        return asyncio.run(asyncio.wait_for(ask(), 5))
    except AuthenticationFailed:
        raise
    except (ServiceUnavailable, TimeoutError):
        return False


def _database(endpoint: str, settings: Settings) -> bool:
    own = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": endpoint})}
    )
    eng = db.engine(own.database_url())
    try:
        with eng.connect() as conn:
            return conn.execute(text("select 1")).scalar() == 1
    except AuthenticationFailed:
        raise
    except Exception:  # not reachable yet; the caller owns the deadline
        return False
    finally:
        eng.dispose()
