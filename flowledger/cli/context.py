"""The settings object of one CLI invocation, built once and shared by its commands.

When a local stack is running (its stack.json exists) and the environment does not
name a service explicitly, commands talk to the stack's services: that is what
`flowledger stack up` followed by any other command should mean."""

from __future__ import annotations

import os

import typer
from pydantic import ValidationError

from flowledger import tracing
from flowledger.errors import ConfigError
from flowledger.settings import Settings
from flowledger.stack import state as stack_state
from workflows.client_env import with_client_env


def install(ctx: typer.Context) -> None:
    ctx.ensure_object(dict)
    ctx.obj.setdefault("settings", None)


def with_stack_endpoints(settings: Settings) -> Settings:
    current = stack_state.load(settings.stack.state_dir.resolve())
    if current is None:
        return settings
    updates: dict[str, object] = {}
    kafka = current.services.get("kafka")
    if kafka and "bootstrap_servers" not in settings.kafka.model_fields_set:
        updates["kafka"] = stack_state.with_replication(
            settings.kafka.model_copy(update={"bootstrap_servers": kafka.endpoint}), kafka
        )
    temporal = current.services.get("temporal")
    if temporal and "address" not in settings.temporal.model_fields_set:
        updates["temporal"] = settings.temporal.model_copy(update={"address": temporal.endpoint})
    database = current.services.get("database")
    if database and not settings.database.url:
        updates["database"] = settings.database.model_copy(update={"url": database.endpoint})
    return settings.model_copy(update=updates) if updates else settings


def settings(ctx: typer.Context) -> Settings:
    root = ctx.find_root()
    root.ensure_object(dict)
    current = root.obj.get("settings")
    if current is None:
        try:
            # Temporal's own client variables and profiles count as naming a service.
            current = with_stack_endpoints(with_client_env(Settings(), os.environ))
        except ValidationError as exc:
            raise ConfigError(f"settings from FLOWLEDGER_* are invalid: {exc}") from exc
        root.obj["settings"] = current
        # The composition root: the process's tracer provider, once, from the settings.
        tracing.install(current.tracing)
    assert isinstance(current, Settings)
    return current


def replace(ctx: typer.Context, new: Settings) -> None:
    """Commands with flags that override settings (--state-dir, --database) call this
    before anything reads the settings."""
    root = ctx.find_root()
    root.ensure_object(dict)
    root.obj["settings"] = new
