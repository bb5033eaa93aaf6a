"""The secured services of the secured-service tests, started by their fixtures: a
Kafka broker whose only client listener is SASL_SSL (SCRAM-SHA-512), Temporal behind
a TLS proxy that demands a client certificate, and PostgreSQL with TLS and SCRAM
passwords. Credentials and certificates are made here, at test time."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from flowledger.errors import FlowledgerError
from flowledger.settings import KafkaSettings, Settings, StackSettings
from flowledger.stack import database, kafka, processes, temporal
from flowledger.stack.database_secure import require_tls_and_password
from flowledger.stack.kafka_secure import SaslSslListener
from flowledger.stack.state import ServiceState
from tests.secured.certs import Authority
from tests.secured.tls_proxy import TlsProxy
from tests.waiting import wait_for
from topics import clients


@dataclass
class SecuredKafka:
    service: ServiceState
    ca: Path
    user: str
    password: SecretStr

    def settings(self, password: SecretStr | None = None) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.service.endpoint,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=self.user,
            sasl_password=password or self.password,
            ssl_ca_location=self.ca,
        )

    def close(self) -> None:
        processes.stop(self.service.pid)


def new_secret() -> SecretStr:
    return SecretStr(secrets.token_urlsafe(18))


def start_kafka(root: Path, authority: Authority, stack: StackSettings) -> SecuredKafka:
    broker = authority.issue("kafka-broker", server=True)
    user, password = "flowledger-app", new_secret()
    listener = SaslSslListener(
        keystore=broker.bundle,
        truststore=authority.ca,
        broker_password=new_secret(),
        users={user: password},
    )
    try:
        service = kafka.start(stack, root, secure=listener)
    except FlowledgerError as exc:
        pytest.fail(f"the SASL_SSL broker could not start: {exc}", pytrace=False)
    secured = SecuredKafka(service=service, ca=authority.ca, user=user, password=password)
    probe = Settings(kafka=secured.settings())

    def answers() -> bool:
        if not processes.alive(service.pid):
            pytest.fail(
                "the SASL_SSL broker exited:\n" + processes.tail(Path(service.log or "")),
                pytrace=False,
            )
        try:
            return bool(clients.admin(probe).list_topics(timeout=2).brokers)
        except Exception:
            return False

    wait_for(answers, 120, "the SASL_SSL broker", lambda: processes.tail(Path(service.log or "")))
    return secured


@dataclass
class SecuredTemporal:
    server: ServiceState
    proxy: TlsProxy
    endpoint: str

    def close(self) -> None:
        self.proxy.close()
        processes.stop(self.server.pid)


def start_temporal(root: Path, authority: Authority, stack: StackSettings) -> SecuredTemporal:
    """The dev server on loopback, reachable for the tests only through the proxy."""
    try:
        server = temporal.start(stack, root)
    except FlowledgerError as exc:
        pytest.fail(f"the Temporal dev server could not start: {exc}", pytrace=False)
    wait_for(
        lambda: temporal.probe(server.endpoint),
        120,
        "the Temporal dev server",
        lambda: processes.tail(Path(server.log or "")),
    )
    issued = authority.issue("temporal-frontend", server=True)
    proxy = TlsProxy(server.endpoint, issued.cert, issued.key, authority.ca)
    return SecuredTemporal(server=server, proxy=proxy, endpoint=proxy.start())


@dataclass
class SecuredPostgres:
    service: ServiceState
    url: str  # without the password
    password: SecretStr

    def close(self) -> None:
        database.stop_postgres(self.service)


def start_postgres(root: Path, authority: Authority, stack: StackSettings) -> SecuredPostgres:
    try:
        service = database.start_postgres(stack, root)
    except FlowledgerError as exc:
        pytest.fail(f"PostgreSQL could not start: {exc}", pytrace=False)
    issued = authority.issue("postgres", server=True)
    password = new_secret()
    url = require_tls_and_password(service, issued.cert, issued.key, "flowledger_app", password)
    return SecuredPostgres(service=service, url=url, password=password)
