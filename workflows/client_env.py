"""Temporal's own client configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE and the profiles of temporal.toml),
read by the SDK's loader, fills what flowledger's own settings leave unset. The
environment is handed in by the caller (the CLI passes its own), never read here."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from temporalio.envconfig import ClientConfigProfile

from flowledger.errors import ConfigError
from flowledger.settings import Settings, TemporalSettings
from workflows.codes import TEMPORAL_CONFIG_INVALID


def _source(field: str, source: Any) -> dict[str, Any]:
    """A DataSource (a path or the PEM itself) as the matching pair of settings."""
    if source is None:
        return {}
    if isinstance(source, Path):
        return {field: source}
    text = source.decode("utf-8") if isinstance(source, bytes) else str(source)
    return {f"{field}_data": SecretStr(text) if field == "tls_client_key" else text}


def profile_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The profile named by TEMPORAL_PROFILE (else "default"), with the environment's
    overrides, as TemporalSettings fields."""
    try:
        profile = ClientConfigProfile.load(
            profile=environ.get("TEMPORAL_PROFILE"), override_env_vars=dict(environ)
        )
    except Exception as exc:  # the loader's own parse and lookup errors
        raise ConfigError(
            f"Temporal's client configuration cannot be used: {exc}",
            code=TEMPORAL_CONFIG_INVALID,
        ) from exc
    values: dict[str, Any] = {}
    if profile.address:
        values["address"] = profile.address
    if profile.namespace:
        values["namespace"] = profile.namespace
    if profile.api_key:
        values["api_key"] = SecretStr(profile.api_key)
    if profile.grpc_meta:
        values["grpc_meta"] = dict(profile.grpc_meta)
    tls = profile.tls
    if tls is not None:
        if tls.disabled is not None:
            values["tls"] = not tls.disabled
        if tls.server_name:
            values["tls_server_name"] = tls.server_name
        values.update(_source("tls_server_ca_cert", tls.server_root_ca_cert))
        values.update(_source("tls_client_cert", tls.client_cert))
        values.update(_source("tls_client_key", tls.client_private_key))
    return values


def with_client_env(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """The settings, with each Temporal field flowledger's own settings leave unset
    taken from Temporal's client configuration (so FLOWLEDGER_TEMPORAL__* wins)."""
    found = profile_values(environ)
    temporal = settings.temporal
    own = temporal.model_fields_set
    taken = {name: value for name, value in found.items() if name not in own}
    if "tls_client_cert" in own or "tls_client_cert_data" in own or "tls_server_ca_cert" in own:
        # Certificates are a set: never mix ours with a profile's.
        taken = {k: v for k, v in taken.items() if not k.startswith("tls_")}
    if not taken:
        return settings
    merged = TemporalSettings.model_validate({**temporal.model_dump(exclude_unset=True), **taken})
    return settings.model_copy(update={"temporal": merged})
