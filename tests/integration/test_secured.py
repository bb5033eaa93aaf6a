"""flowledger on secured services, driven through the CLI with nothing but
environment variables, as a user attaches to managed ones: Kafka whose only client
listener is SASL_SSL (SCRAM-SHA-512, a CA made by the test), Temporal behind a TLS
endpoint that demands a client certificate, PostgreSQL with TLS and SCRAM passwords.
The whole flow runs on them; wrong credentials stop every command at once with one
line and exit 3; and no secret shows in any output or log of the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flowledger.settings import Settings, StackSettings
from tests.secured.certs import Authority, Issued
from tests.secured.services import (
    SecuredKafka,
    SecuredPostgres,
    SecuredTemporal,
    start_kafka,
    start_postgres,
    start_temporal,
)
from tests.stack_fixture import CACHE
from tests.waiting import wait_for
from topics import clients

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[2]
FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")
EXAMPLES = REPO / "examples"
# A refused password or certificate is reported this fast (the broker answers the
# SASL handshake in well under a second; the rest is the interpreter starting).
FAIL_FAST_S = 20.0


@dataclass
class Secured:
    root: Path
    kafka: SecuredKafka
    temporal: SecuredTemporal
    postgres: SecuredPostgres
    client: Issued
    ca: Path
    # (what, text) of every command's stdout and stderr.
    outputs: list[tuple[str, str]] = field(default_factory=list)

    def env(self, state_dir: Path, **changes: str | None) -> dict[str, str]:
        """What a user exports: FLOWLEDGER_* for Kafka and the database, Temporal's
        own TEMPORAL_TLS_* for its client certificate."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("FLOWLEDGER_", "TEMPORAL_"))
        }
        env.update(
            {
                "FLOWLEDGER_STACK__STATE_DIR": str(state_dir),
                "FLOWLEDGER_STACK__CACHE_DIR": str(CACHE),
                "FLOWLEDGER_KAFKA__BOOTSTRAP_SERVERS": self.kafka.service.endpoint,
                "FLOWLEDGER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "FLOWLEDGER_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
                "FLOWLEDGER_KAFKA__SASL_USERNAME": self.kafka.user,
                "FLOWLEDGER_KAFKA__SASL_PASSWORD": self.kafka.password.get_secret_value(),
                "FLOWLEDGER_KAFKA__SSL_CA_LOCATION": str(self.ca),
                "FLOWLEDGER_TEMPORAL__ADDRESS": self.temporal.endpoint,
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(self.ca),
                "TEMPORAL_TLS_CLIENT_CERT_PATH": str(self.client.cert),
                "TEMPORAL_TLS_CLIENT_KEY_PATH": str(self.client.key),
                # No temporal.toml of the machine's user takes part.
                "TEMPORAL_CONFIG_FILE": str(self.root / "no-temporal.toml"),
                "FLOWLEDGER_DATABASE__URL": self.postgres.url,
                "FLOWLEDGER_DATABASE__PASSWORD": self.postgres.password.get_secret_value(),
                "FLOWLEDGER_DATABASE__SSLMODE": "require",
                "PYTHONUNBUFFERED": "1",
                # A terminal wide enough that rich does not wrap the one-line errors.
                "COLUMNS": "400",
            }
        )
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def cli(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [FLOWLEDGER, *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        what = " ".join(args)
        self.outputs += [(f"stdout of {what}", done.stdout), (f"stderr of {what}", done.stderr)]
        return done

    def json(self, env: dict[str, str], *args: str, expect: int = 0) -> Any:
        done = self.cli(env, *args, "--json")
        assert done.returncode == expect, f"{args}: {done.stdout}{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    def secrets(self) -> list[str]:
        return [
            self.kafka.password.get_secret_value(),
            self.postgres.password.get_secret_value(),
            # The body of the client's private key, not its armour lines.
            self.client.key.read_text().splitlines()[1],
        ]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secured")
    os.chmod(root, 0o755)  # PostgreSQL runs as its own user beneath it
    authority = Authority(root / "certs")
    stack = StackSettings(state_dir=root / "services", cache_dir=CACHE, ready_timeout_s=120)
    started: list[Any] = []
    try:
        kafka = start_kafka(root / "services", authority, stack)
        started.append(kafka)
        temporal = start_temporal(root / "services", authority, stack)
        started.append(temporal)
        postgres = start_postgres(root / "services", authority, stack)
        started.append(postgres)
        client = authority.issue("flowledger-client", server=False)
        yield Secured(root, kafka, temporal, postgres, client, authority.ca)
    finally:
        for service in reversed(started):
            service.close()


def _runs(secured: Secured, env: dict[str, str]) -> dict[str, str]:
    found = secured.json(env, "runs", "list")
    return {run["run_id"]: run["status"] for run in found}


def test_the_whole_flow_on_secured_services(secured: Secured, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = secured.env(state_dir)
    attach = secured.json(
        env,
        "stack",
        "up",
        "--kafka",
        secured.kafka.service.endpoint,
        "--temporal",
        secured.temporal.endpoint,
        "--database",
        secured.postgres.url,
    )
    assert {s["mode"] for s in attach["services"].values()} == {"attached"}
    try:
        status = secured.json(env, "stack", "status")
        # The components are listed too, down until `up` starts them.
        attached = {name: status["services"][name]["state"] for name in attach["services"]}
        assert set(attached.values()) == {"up"}, status
        secured.json(env, "up", "--detach")
        secured.json(
            env, "definitions", "publish", str(EXAMPLES / "definitions" / "order-fulfilment.json")
        )
        # The processor's trigger index has to hold the definition before its event.
        wait_for(
            lambda: secured.json(env, "definitions", "list"),
            60,
            "the definition in the projection",
        )
        secured.json(env, "publish", str(EXAMPLES / "events" / "01-orders.ndjson"))
        wait_for(
            lambda: sorted(_runs(secured, env).values()) == ["WAITING", "WAITING"],
            90,
            "two order runs waiting for their payment",
        )
        secured.json(env, "publish", str(EXAMPLES / "events" / "02-payment.ndjson"))
        wait_for(
            lambda: sorted(_runs(secured, env).values()) == ["SUCCEEDED", "WAITING"],
            90,
            "the paid order's run to resume and finish",
        )
        secured.json(env, "projections", "wait", "--until-caught-up", "--timeout", "60")
        verdict = secured.json(env, "replay", "verify")
        assert verdict["identical"] is True, verdict
    finally:
        secured.json(env, "down")
    _assert_no_secret(secured, state_dir)


def _assert_no_secret(secured: Secured, state_dir: Path) -> None:
    texts = list(secured.outputs)
    logs = [p for p in state_dir.rglob("*") if p.is_file()]
    logs += [p for p in (secured.root / "services").rglob("*.log") if p.is_file()]
    texts += [(str(p), p.read_text(encoding="utf-8", errors="replace")) for p in logs]
    assert logs, "the run left no logs to check"
    for number, secret in enumerate(secured.secrets()):
        leaks = [what for what, text in texts if secret in text]
        assert not leaks, f"secret #{number} shows in {leaks}"


def _one_line_refusal(done: subprocess.CompletedProcess[str], code: str, began: float) -> None:
    took = time.monotonic() - began
    assert done.returncode == 3, done.stdout + done.stderr
    # The worker names its endpoint first; the error itself is one line, the last.
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"{code}: "), done.stderr
    assert sum(code in line for line in lines) == 1 and "Traceback" not in done.stderr
    assert took < FAIL_FAST_S, f"took {took:.1f}s"


def _events_end(secured: Secured) -> int:
    settings = Settings(kafka=secured.kafka.settings())
    consumer = clients.consumer(settings, "probe")
    try:
        from confluent_kafka import TopicPartition

        topic = settings.topic("flowledger.events.v1")
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def test_a_wrong_kafka_password_fails_fast(secured: Secured, tmp_path: Path) -> None:
    env = secured.env(tmp_path / "state", FLOWLEDGER_KAFKA__SASL_PASSWORD="not-the-password")
    good = secured.env(tmp_path / "state")
    secured.json(good, "topics", "ensure")
    before = _events_end(secured)
    for command in (
        ["publish", str(EXAMPLES / "events" / "01-orders.ndjson")],
        ["processor"],
        ["projector"],
        ["topics", "ensure"],
        ["replay", "verify"],
    ):
        began = time.monotonic()
        done = secured.cli(env, *command)
        _one_line_refusal(done, "KAFKA_AUTH_FAILED", began)
    began = time.monotonic()
    refused = secured.json(env, "publish", str(EXAMPLES / "events" / "01-orders.ndjson"), expect=3)
    assert refused["error"]["code"] == "KAFKA_AUTH_FAILED"
    assert time.monotonic() - began < FAIL_FAST_S
    assert _events_end(secured) == before  # nothing half-done
    _assert_no_secret(secured, tmp_path / "state")


def test_temporal_without_a_client_certificate_is_refused(secured: Secured, tmp_path: Path) -> None:
    env = secured.env(
        tmp_path / "state",
        TEMPORAL_TLS_CLIENT_CERT_PATH=None,
        TEMPORAL_TLS_CLIENT_KEY_PATH=None,
    )
    began = time.monotonic()
    done = secured.cli(env, "worker")
    _one_line_refusal(done, "TEMPORAL_AUTH_FAILED", began)
    # The processor retries a Temporal that is down for as long as it runs; one that
    # refuses the certificate stops it at once.
    began = time.monotonic()
    _one_line_refusal(secured.cli(env, "processor"), "TEMPORAL_AUTH_FAILED", began)


def test_a_wrong_database_password_is_refused(secured: Secured, tmp_path: Path) -> None:
    env = secured.env(tmp_path / "state", FLOWLEDGER_DATABASE__PASSWORD="not-the-password")
    began = time.monotonic()
    done = secured.cli(env, "runs", "list")
    _one_line_refusal(done, "DATABASE_AUTH_FAILED", began)
    plain = secured.env(tmp_path / "state", FLOWLEDGER_DATABASE__SSLMODE="disable")
    refused = secured.json(plain, "runs", "list", expect=3)
    assert refused["error"]["code"] == "DATABASE_AUTH_FAILED"
    _assert_no_secret(secured, tmp_path / "state")
