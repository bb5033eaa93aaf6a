"""How the security settings become client configuration: librdkafka properties,
Temporal's connect options (including Temporal's own environment variables and
temporal.toml profiles, through the SDK's loader), and the database URL; and that
no secret shows in the settings' printed form."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from confluent_kafka import KafkaError
from pydantic import SecretStr, ValidationError

from flowledger.cli.output import refusals
from flowledger.errors import AuthenticationFailed, ConfigError
from flowledger.settings import (
    DatabaseSettings,
    KafkaSettings,
    Settings,
    TemporalSettings,
    redact_url,
)
from topics import kafka_access
from topics.kafka_security import properties
from workflows.client import connect_options
from workflows.client_env import with_client_env


def test_sasl_ssl_scram_with_pass_through() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="app",
        sasl_password=SecretStr("pw"),
        ssl_ca_location=Path("/ca.pem"),
        config={"ssl.endpoint.identification.algorithm": "none", "sasl.username": "other"},
    )
    assert properties(kafka) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "other",  # the pass-through wins
        "sasl.password": "pw",
        "ssl.ca.location": "/ca.pem",
        "ssl.endpoint.identification.algorithm": "none",
    }
    assert "pw" not in repr(kafka) and "pw" not in str(Settings(kafka=kafka))


def test_mutual_tls_and_oauthbearer_oidc() -> None:
    mtls = KafkaSettings(
        security_protocol="SSL",
        ssl_certificate_location=Path("/c.pem"),
        ssl_key_location=Path("/k.pem"),
        ssl_key_password=SecretStr("kp"),
    )
    assert properties(mtls) == {
        "security.protocol": "ssl",
        "ssl.certificate.location": "/c.pem",
        "ssl.key.location": "/k.pem",
        "ssl.key.password": "kp",
    }
    oauth = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_endpoint_url="https://idp/token",
        oauth_client_id="cid",
        oauth_client_secret=SecretStr("cs"),
        oauth_scope="kafka",
    )
    assert properties(oauth) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": "https://idp/token",
        "sasl.oauthbearer.client.id": "cid",
        "sasl.oauthbearer.client.secret": "cs",
        "sasl.oauthbearer.scope": "kafka",
    }


def test_incomplete_sasl_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        properties(KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN"))
    with pytest.raises(ConfigError):
        properties(KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER"))


def test_kafka_settings_from_flowledger_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLEDGER_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FLOWLEDGER_KAFKA__SASL_PASSWORD", "pw")
    monkeypatch.setenv("FLOWLEDGER_KAFKA__CONFIG", '{"socket.keepalive.enable": true}')
    kafka = Settings().kafka
    assert kafka.sasl_password is not None and kafka.sasl_password.get_secret_value() == "pw"
    assert kafka.config == {"socket.keepalive.enable": True}


def test_temporal_api_key_means_tls() -> None:
    options = connect_options(
        TemporalSettings(address="ns.acct.tmprl.cloud:7233", api_key=SecretStr("key"))
    )
    assert options["tls"] is True and options["api_key"] == "key"
    assert connect_options(TemporalSettings())["tls"] is False


def test_temporal_mutual_tls(tmp_path: Path) -> None:
    for name in ("ca", "cert", "key"):
        (tmp_path / name).write_text(f"PEM {name}")
    options = connect_options(
        TemporalSettings(
            tls_server_ca_cert=tmp_path / "ca",
            tls_client_cert=tmp_path / "cert",
            tls_client_key=tmp_path / "key",
            tls_server_name="temporal.internal",
        )
    )
    tls = options["tls"]
    assert tls.client_cert == b"PEM cert" and tls.client_private_key == b"PEM key"
    assert tls.server_root_ca_cert == b"PEM ca" and tls.domain == "temporal.internal"


def test_temporal_environment_fills_what_flowledger_leaves_unset(tmp_path: Path) -> None:
    environ = {
        "TEMPORAL_ADDRESS": "env-host:7233",
        "TEMPORAL_NAMESPACE": "env-ns",
        "TEMPORAL_API_KEY": "env-key",
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(tmp_path / "c.pem"),
        "TEMPORAL_TLS_CLIENT_KEY_DATA": "KEY PEM",
        "TEMPORAL_TLS_SERVER_NAME": "sni",
        "TEMPORAL_CONFIG_FILE": str(tmp_path / "absent.toml"),
    }
    own = Settings(temporal={"namespace": "mine"})
    temporal = with_client_env(own, environ).temporal
    assert temporal.address == "env-host:7233"
    assert temporal.namespace == "mine"  # flowledger's own setting wins
    assert temporal.api_key is not None and temporal.api_key.get_secret_value() == "env-key"
    assert temporal.tls_client_cert == tmp_path / "c.pem"
    assert temporal.tls_client_key_data is not None
    assert temporal.tls_server_name == "sni"
    assert "env-key" not in str(temporal) and "KEY PEM" not in repr(temporal)


def test_temporal_toml_profile(tmp_path: Path) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.cloud]\naddress = "acct.tmprl.cloud:7233"\nnamespace = "prod.acct"\n'
        'api_key = "toml-key"\n',
        encoding="utf-8",
    )
    environ = {"TEMPORAL_CONFIG_FILE": str(config), "TEMPORAL_PROFILE": "cloud"}
    temporal = with_client_env(Settings(), environ).temporal
    assert (temporal.address, temporal.namespace) == ("acct.tmprl.cloud:7233", "prod.acct")
    assert connect_options(temporal)["tls"] is True


def test_no_temporal_configuration_changes_nothing(tmp_path: Path) -> None:
    own = Settings()
    environ = {"TEMPORAL_CONFIG_FILE": str(tmp_path / "absent.toml")}
    assert with_client_env(own, environ) is own


def test_database_password_and_tls_join_the_url(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p@ss:w/rd\n")
    settings = Settings(
        database=DatabaseSettings(
            url="postgresql+psycopg://app@db:5432/flowledger",
            password_file=secret,
            sslmode="verify-full",
            sslrootcert=tmp_path / "ca.pem",
        )
    )
    url = settings.database_url()
    assert url.startswith("postgresql+psycopg://app:p%40ss%3Aw%2Frd@db:5432/flowledger?")
    assert "sslmode=verify-full" in url and f"sslrootcert={tmp_path}/ca.pem" in url
    assert redact_url(url).startswith("postgresql+psycopg://app:***@db:5432/")
    assert "p@ss" not in str(settings)
    env_secret = Settings(database={"url": "sqlite:///x.db", "password": SecretStr("pw")})
    assert env_secret.database_url() == "sqlite:///x.db"


def test_an_empty_variable_unsets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLEDGER_TEMPORAL__TLS_CLIENT_CERT", "")
    assert Settings().temporal.tls_client_cert is None


def test_an_unreadable_password_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot be read"):
        DatabaseSettings(url="postgresql://u@h/db", password_file=tmp_path / "absent")


def test_a_refused_handshake_is_one_line_and_a_cut_one_is_no_refusal() -> None:
    refused = kafka_access.refused(
        KafkaError(
            KafkaError._AUTHENTICATION,
            "sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: Authentication "
            "failed due to invalid credentials (after 312ms in state AUTH_REQ)",
        )
    )
    assert refused is not None and refused.code == "KAFKA_AUTH_FAILED"
    assert refused.message == (
        "Kafka refused the connection: SASL authentication error: Authentication failed "
        "due to invalid credentials"
    )
    cut = KafkaError(
        KafkaError._AUTHENTICATION,
        "GroupCoordinator: SASL authentication error: SaslAuthenticateRequest failed: "
        "Local: Broker transport failure (after 0ms in state DOWN)",
    )
    assert kafka_access.refused(cut) is None
    assert kafka_access.refused(KafkaError(KafkaError._TRANSPORT, "down")) is None


def test_auth_failures_exit_3_from_any_command() -> None:
    with pytest.raises(typer.Exit) as exit_info, refusals(as_json=True):
        raise AuthenticationFailed("no", code="DATABASE_AUTH_FAILED")
    assert exit_info.value.exit_code == 3
