"""The multi-node deployment file: a 3-broker KRaft cluster, Temporal with its own
PostgreSQL, PostgreSQL for the projections, and the flowledger roles as scalable
services whose commands are real CLI commands configured only by FLOWLEDGER_ vars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flowledger.cli import _register, app
from flowledger.settings import Settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"
ROLES = ("processor", "worker", "projector")

_register()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCKER / "compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


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
def test_every_command_is_a_real_cli_command(compose: dict[str, Any], name: str) -> None:
    command = compose["services"][name]["command"]
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_dockerfile_runs_the_cli() -> None:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["flowledger"]' in text
    assert "pip install ." in text
