"""A SASL_SSL listener for the local broker, in place of its PLAINTEXT one: TLS with a
PEM keystore, SCRAM credentials written into the metadata at format time (so they
exist before the broker first answers), and the broker talking to itself over the
same listener. Used by the secured-service tests; the controller listener stays
plaintext on loopback, it takes no client requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

LISTENER = "SASL_SSL"


@dataclass(frozen=True)
class SaslSslListener:
    # PEM: the broker's key and certificate chain in one file, and the CA clients use.
    keystore: Path
    truststore: Path
    mechanism: str = "SCRAM-SHA-512"
    broker_user: str = "broker"
    broker_password: SecretStr = field(default_factory=lambda: SecretStr("broker"))
    # Every other user the cluster knows, by name.
    users: dict[str, SecretStr] = field(default_factory=dict)
    # "required" asks every client for a certificate signed by the truststore's CA.
    client_auth: str = "none"

    def listener(self, port: int) -> str:
        return f"{LISTENER}://127.0.0.1:{port}"

    def properties(self) -> list[str]:
        mech = self.mechanism.lower()
        password = _jaas_quote(self.broker_password.get_secret_value())
        return [
            f"sasl.enabled.mechanisms={self.mechanism}",
            f"sasl.mechanism.inter.broker.protocol={self.mechanism}",
            f"listener.name.{LISTENER.lower()}.{mech}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.broker_user}" password="{password}";',
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.truststore}",
            f"ssl.client.auth={self.client_auth}",
        ]

    def format_args(self) -> list[str]:
        """`--add-scram` for the broker itself and each user (the storage tool's own
        syntax: SCRAM-SHA-512=[name=...,password=...])."""
        everyone = {self.broker_user: self.broker_password, **self.users}
        args: list[str] = []
        for name, secret in everyone.items():
            args += [
                "--add-scram",
                f"{self.mechanism}=[name={name},password={secret.get_secret_value()}]",
            ]
        return args


def _jaas_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
