"""A Temporal client with flowledger's data converter (pydantic), for anything that
starts, signals or queries runs, and the one place flowledger makes a Temporal
client: TLS, mutual TLS and API keys come from the settings here. Importing it loads
no worker code: no interpreter, activities or actions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from flowledger import tracing
from flowledger.codes import CONFIG_FILE_UNREADABLE
from flowledger.errors import AuthenticationFailed, ConfigError, ServiceUnavailable
from flowledger.settings import Settings, TemporalSettings
from workflows import tls_diagnosis
from workflows.codes import TEMPORAL_AUTH_FAILED, TEMPORAL_UNAVAILABLE

# What the SDK's core says when it refuses the server's certificate or the server our
# credentials. (Not "TLS" as such: a connection cut mid-stream by a TLS proxy whose
# upstream restarts mentions TLS too, and that one is worth waiting out.)
_REFUSED_WORDS = ("certificate", "unauthenticated", "permission denied")


def _pem(path: Path | None, data: str | None, setting: str) -> bytes | None:
    if data is not None:
        return data.encode("utf-8")
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"temporal.{setting} {path} cannot be read: {exc.strerror or exc}",
            code=CONFIG_FILE_UNREADABLE,
        ) from None


def tls_config(temporal: TemporalSettings) -> bool | TLSConfig:
    key_data = temporal.tls_client_key_data
    ca = _pem(temporal.tls_server_ca_cert, temporal.tls_server_ca_cert_data, "tls_server_ca_cert")
    cert = _pem(temporal.tls_client_cert, temporal.tls_client_cert_data, "tls_client_cert")
    key = _pem(
        temporal.tls_client_key,
        key_data.get_secret_value() if key_data else None,
        "tls_client_key",
    )
    given = any((ca, cert, key, temporal.tls_server_name))
    wanted = temporal.tls
    if wanted is None:
        wanted = given or temporal.api_key is not None
    if not wanted:
        return False
    if not given:
        return True  # the system's roots, as Temporal Cloud with an API key needs
    return TLSConfig(
        domain=temporal.tls_server_name,
        server_root_ca_cert=ca,
        client_cert=cert,
        client_private_key=key,
    )


def connect_options(temporal: TemporalSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "target_host": temporal.address,
        "namespace": temporal.namespace,
        "tls": tls_config(temporal),
    }
    if temporal.api_key is not None:
        options["api_key"] = temporal.api_key.get_secret_value()
    if temporal.grpc_meta:
        options["rpc_metadata"] = dict(temporal.grpc_meta)
    return options


def interceptors(settings: Settings) -> list[Interceptor]:
    """The SDK's OpenTelemetry interceptor when tracing is on. Given to the client, it
    also serves every worker built on that client (workflow and activity spans)."""
    if not settings.tracing.active:
        return []
    return [TracingInterceptor(tracing.tracer(settings.tracing))]


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client; `runtime` is a Temporal runtime of the caller's (the worker's, which
    exports the SDK's own metrics), else the SDK's default one."""
    address = settings.temporal.address
    options = connect_options(settings.temporal)
    if runtime is not None:
        options["runtime"] = runtime
    try:
        return await Client.connect(
            **options, data_converter=pydantic_data_converter, interceptors=interceptors(settings)
        )
    except RPCError as exc:
        if exc.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            raise AuthenticationFailed(
                f"Temporal at {address} refused the credentials: {exc.message}",
                code=TEMPORAL_AUTH_FAILED,
            ) from exc
        raise _unavailable(address, exc) from exc
    except Exception as exc:
        text = _one_line(str(exc))
        reason = None
        if options["tls"] is not False:
            reason = await asyncio.to_thread(
                tls_diagnosis.refusal,
                address,
                options["tls"],
                # An API key's endpoint asks for no certificate: its silence is an outage.
                certificate_expected=settings.temporal.api_key is None,
            )
        if reason is None and any(word in text.lower() for word in _REFUSED_WORDS):
            reason = text
        if reason is not None:
            raise AuthenticationFailed(
                f"Temporal at {address} refused the TLS connection: {reason}",
                code=TEMPORAL_AUTH_FAILED,
            ) from exc
        raise _unavailable(address, exc) from exc


def _unavailable(address: str, exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"Temporal at {address} did not answer: {_one_line(str(exc))}",
        code=TEMPORAL_UNAVAILABLE,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())
