"""librdkafka's security properties from the settings: TLS, mutual TLS, SASL PLAIN and
SCRAM, and OAUTHBEARER with OIDC client credentials (librdkafka fetches and refreshes
the token itself). The pass-through (`kafka.config`) is applied last, so a cluster's
need that has no setting of its own is still within reach."""

from __future__ import annotations

from typing import Any

from flowledger.errors import ConfigError
from flowledger.settings import KafkaSettings
from topics.codes import KAFKA_CONFIG_INVALID


def properties(kafka: KafkaSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"security.protocol": kafka.security_protocol.lower()}
    sasl = kafka.security_protocol.startswith("SASL_")
    if sasl:
        mechanism = kafka.sasl_mechanism or "PLAIN"
        out["sasl.mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            out.update(_oauth(kafka))
        else:
            if not kafka.sasl_username or kafka.sasl_password is None:
                raise ConfigError(
                    f"SASL {mechanism} needs kafka.sasl_username and kafka.sasl_password",
                    code=KAFKA_CONFIG_INVALID,
                )
            out["sasl.username"] = kafka.sasl_username
            out["sasl.password"] = kafka.sasl_password.get_secret_value()
    files = {
        "ssl.ca.location": kafka.ssl_ca_location,
        "ssl.certificate.location": kafka.ssl_certificate_location,
        "ssl.key.location": kafka.ssl_key_location,
    }
    out.update({name: str(path) for name, path in files.items() if path is not None})
    if kafka.ssl_key_password is not None:
        out["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    out.update(kafka.config)
    return out


def _oauth(kafka: KafkaSettings) -> dict[str, Any]:
    if not kafka.oauth_token_endpoint_url:
        # Without an endpoint librdkafka would fall back to its unsecured test
        # tokens, which no real cluster accepts: better refused here.
        if "sasl.oauthbearer.method" in kafka.config:
            return {}
        raise ConfigError(
            "OAUTHBEARER needs kafka.oauth_token_endpoint_url (OIDC client credentials)",
            code=KAFKA_CONFIG_INVALID,
        )
    out: dict[str, Any] = {
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": kafka.oauth_token_endpoint_url,
    }
    if kafka.oauth_client_id:
        out["sasl.oauthbearer.client.id"] = kafka.oauth_client_id
    if kafka.oauth_client_secret is not None:
        out["sasl.oauthbearer.client.secret"] = kafka.oauth_client_secret.get_secret_value()
    if kafka.oauth_scope:
        out["sasl.oauthbearer.scope"] = kafka.oauth_scope
    return out
