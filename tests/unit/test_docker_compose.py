"""The multi-node deployment files: a 3-broker KRaft cluster, Temporal with its own
PostgreSQL, PostgreSQL for the projections, and the flowledger roles as scalable
services whose commands are real CLI commands configured only by FLOWLEDGER_ vars;
and the secured variant, in which every one of those connections is secured."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flowledger.cli import _register, app
from flowledger.settings import Settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"
ROLES = ("processor", "worker", "projector", "reconciler", "api")

_register()


def _load(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((DOCKER / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load("compose.yml")


def test_three_kraft_brokers(compose: dict[str, Any]) -> None:
    kafka = {k: v for k, v in compose["services"].items() if k.startswith("kafka-")}
    assert len(kafka) == 3
    ids = set()
    for service in kafka.values():
        env = service["environment"]
        assert service["image"].startswith("apache/kafka:4.")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        ids.add(env["KAFKA_NODE_ID"])
    assert ids == {"1", "2", "3"}


def test_temporal_and_databases(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "temporal-db"
    assert services["temporal-db"]["image"].startswith("postgres:")
    assert services["projections-db"]["image"].startswith("postgres:")


@pytest.fixture(scope="module", params=["compose.yml", "compose.secured.yml"])
def either(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _load(request.param)


def test_temporal_is_the_server_image_with_its_schema_set_up_first(
    either: dict[str, Any],
) -> None:
    services = either["services"]
    images = {name: s.get("image", "") for name, s in services.items()}
    assert not any("auto-setup" in image for image in images.values())
    assert images["temporal"].startswith("temporalio/server:")
    assert images["temporal-schema"].startswith("temporalio/admin-tools:")
    depends = services["temporal"]["depends_on"]
    assert depends["temporal-schema"]["condition"] == "service_completed_successfully"
    for script in ("setup-schema.sh", "create-namespace.sh"):
        assert (DOCKER / "temporal" / script).is_file()
    for role in ROLES:
        wait = services[role]["depends_on"]["temporal-namespace"]
        assert wait["condition"] == "service_completed_successfully"


@pytest.fixture(scope="module")
def secured() -> dict[str, Any]:
    return _load("compose.secured.yml")


def test_secured_brokers_listen_only_on_sasl_ssl(secured: dict[str, Any]) -> None:
    script = (DOCKER / "secured" / "kafka-start.sh").read_text(encoding="utf-8")
    listeners = re.search(r"^listeners=(.*)$", script, re.MULTILINE)
    assert listeners is not None
    assert listeners.group(1) == "SASL_SSL://:9092,CONTROLLER://:9093"
    assert "CONTROLLER:SSL" in script and "PLAINTEXT" not in script
    assert "--add-scram" in script and "sasl.enabled.mechanisms=SCRAM-SHA-512" in script
    brokers = [s for name, s in secured["services"].items() if name.startswith("kafka-")]
    assert len(brokers) == 3
    for broker in brokers:
        assert broker["entrypoint"] == ["/bin/bash", "/secured/kafka-start.sh"]
        assert broker["depends_on"]["certs"]["condition"] == "service_completed_successfully"


def test_secured_temporal_demands_client_certificates(secured: dict[str, Any]) -> None:
    env = secured["services"]["temporal"]["environment"]
    assert env["TEMPORAL_TLS_REQUIRE_CLIENT_AUTH"] == "true"
    assert env["TEMPORAL_TLS_FRONTEND_CERT"].startswith("/certs/")


def test_secured_projection_database_takes_tls_and_scram(secured: dict[str, Any]) -> None:
    db = secured["services"]["projections-db"]
    assert "ssl=on" in db["command"]
    assert db["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "POSTGRES_PASSWORD" not in db["environment"]  # a secret file instead


@pytest.mark.parametrize("role", [*ROLES, "topics"])
def test_secured_roles_connect_securely(secured: dict[str, Any], role: str, tmp_path: Path) -> None:
    env = secured["services"][role].get("environment") or secured["x-flowledger"]["environment"]
    assert all(name.startswith("FLOWLEDGER_") for name in env)
    # The settings read the password file when built: a stand-in for compose's secret.
    secret = env["FLOWLEDGER_DATABASE__PASSWORD_FILE"]
    assert secret == "/run/secrets/projections_db_password"
    (tmp_path / "secret").write_text("pw\n")
    env = {**env, "FLOWLEDGER_DATABASE__PASSWORD_FILE": str(tmp_path / "secret")}
    settings = Settings.model_validate(_nested(env))
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.temporal.tls_client_cert and settings.temporal.tls_client_key
    assert settings.database.sslmode == "verify-full" and settings.database.password_file
    # The URL names the user only; the password is the secret file's.
    assert settings.database.url.startswith("postgresql+psycopg://flowledger@")


def test_secured_file_holds_no_password() -> None:
    text = (DOCKER / "compose.secured.yml").read_text(encoding="utf-8")
    for line in text.splitlines():
        if re.search(r"(PASSWORD|PASSWD|PWD)\w*:", line) and "POSTGRES_PWD: temporal" not in line:
            value = line.split(":", 1)[1].strip().strip('"')
            assert value.startswith(("${", "/run/secrets/")) or value == "temporal", line


@pytest.mark.parametrize("role", ROLES)
def test_roles_are_scalable_and_configured_by_flowledger_vars(
    compose: dict[str, Any], role: str
) -> None:
    service = compose["services"][role]
    assert service["deploy"]["replicas"] >= 2
    assert "container_name" not in service  # a fixed name would forbid scaling
    env = service["environment"]
    assert env and all(name.startswith("FLOWLEDGER_") for name in env)
    # Every variable must be one the settings object accepts.
    settings = Settings.model_validate(_nested(env))
    assert settings.kafka.replication_factor == 3
    assert settings.database.url.startswith("postgresql")


def _nested(env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        section, field = name.removeprefix("FLOWLEDGER_").lower().split("__", 1)
        out.setdefault(section, {})[field] = value
    return out


@pytest.mark.parametrize("name", [*ROLES, "topics"])
def test_every_command_is_a_real_cli_command(either: dict[str, Any], name: str) -> None:
    command = either["services"][name]["command"]
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_dockerfile_runs_the_cli() -> None:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["flowledger"]' in text
    assert "pip install ." in text


@pytest.mark.parametrize("role", ROLES)
def test_every_role_serves_metrics_and_has_a_healthcheck(either: dict[str, Any], role: str) -> None:
    service = either["services"][role]
    env = service.get("environment") or either["x-flowledger"]["environment"]
    assert env["FLOWLEDGER_METRICS__HOST"] == "0.0.0.0"
    assert env["FLOWLEDGER_METRICS__PORT"] == "9100"
    check = " ".join(service["healthcheck"]["test"])
    assert "http://127.0.0.1:9100/healthz" in check


def test_prometheus_scrapes_every_role_and_grafana_is_provisioned(either: dict[str, Any]) -> None:
    services = either["services"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(ROLES)
    for role, job in jobs.items():
        assert job["dns_sd_configs"] == [{"names": [role], "type": "A", "port": 9100}]
    mounts = " ".join(services["grafana"]["volumes"])
    assert "./grafana/provisioning:/etc/grafana/provisioning" in mounts
    assert "./grafana/dashboards:/var/lib/grafana/dashboards" in mounts
    source = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "dashboards" / "flowledger.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_has_the_panels_the_issue_names() -> None:
    import json

    document = json.loads((DOCKER / "grafana" / "dashboards" / "flowledger.json").read_text())
    exprs = " ".join(t["expr"] for p in document["panels"] for t in p["targets"])
    for family in (
        "flowledger_processor_records_total",  # ingress rate
        "flowledger_processor_deadletters_total",  # dead-letter rate
        "flowledger_processor_held_events",
        "flowledger_processor_wake_latency_seconds_bucket",
        "flowledger_projector_lag_records",
        "flowledger_projector_batch_seconds_bucket",
        "flowledger_worker_runs_completed_total",  # run outcomes
    ):
        assert family in exprs, family
    uids = {t["datasource"]["uid"] for p in document["panels"] for t in p["targets"]}
    assert uids == {"prometheus"}
