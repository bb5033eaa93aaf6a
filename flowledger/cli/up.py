"""`flowledger up [--detach]`, `flowledger restart COMPONENT` and `flowledger down`: the
stack plus the processor, the worker and the projector as child processes. `up` on a
running stack starts only what is not running."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from flowledger import services
from flowledger.api import tokens
from flowledger.cli.output import (
    console,
    err_console,
    print_json,
    refusals,
    table,
)
from flowledger.cli.stack import JSON_FLAG, StateDir, settings_with_state_dir
from flowledger.codes import STACK_NOT_RUNNING
from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from flowledger.stack import launcher
from flowledger.stack import state as stack_state


def _document(settings: Settings, check: bool = True) -> dict[str, Any]:
    document = launcher.status(settings, check=check)
    document["services"].update(services.status(settings))
    return document


def _render(document: dict[str, Any], title: str) -> None:
    rows = [
        [
            name,
            info.get("state"),
            info.get("endpoint") or info.get("metrics") or "",
            info.get("pid"),
            info.get("log"),
        ]
        for name, info in document["services"].items()
    ]
    console.print(table(title, ["service", "state", "endpoint", "pid", "log"], rows))
    ui = document["services"].get("temporal", {}).get("ui")
    if ui:
        console.print(f"Temporal UI: {ui}")


def _progress(as_json: bool) -> Callable[[str], None] | None:
    return None if as_json else (lambda msg: err_console.print(f"[dim]{msg}…[/]"))


def _child_env(settings: Settings) -> dict[str, str]:
    # The children read the stack's endpoints from stack.json under this directory;
    # everything else (prefixes, groups) they inherit from this process.
    return {**os.environ, "FLOWLEDGER_STACK__STATE_DIR": str(settings.stack.state_dir.resolve())}


def up(
    ctx: typer.Context,
    state_dir: Path | None = StateDir,
    detach: bool = typer.Option(False, "--detach", help="Leave everything running and return."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Start what is not running: the stack, topics, worker, projector, processor, reconciler, api.

    The first time, an operator token for the API is created and printed (once).
    """
    from topics import admin

    settings = settings_with_state_dir(ctx, state_dir)
    with refusals(as_json):
        before = stack_state.load(settings.stack.state_dir.resolve())
        stack = launcher.up(settings, progress=_progress(as_json))
        live = launcher.settings_for(settings, stack)
        admin.ensure(live)
        token = tokens.ensure_development(
            settings.api.resolved_tokens_file(settings.stack.state_dir.resolve()),
            settings.api.development_tenants,
        )
        components = services.start(settings, _child_env(settings))
    document = _document(settings, check=False)
    document["started"] = [*launcher.started(before, stack), *components]
    if token is not None:
        # Shown this once: the tokens file keeps only its hash.
        document["api_token"] = token
        if not as_json:
            err_console.print(
                f"API development token (operator, {', '.join(settings.api.development_tenants)})"
                f": {token}"
            )
    if detach:
        if as_json:
            print_json(document)
        else:
            _render(document, "up (detached)")
        return
    if not as_json:
        _render(document, "up (Ctrl-C stops everything)")
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1.0):
            gone = [n for n, s in services.status(settings).items() if s["state"] != "up"]
            if gone:
                err_console.print(f"[red]{', '.join(gone)} stopped; shutting down[/]")
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        services.stop(settings)
        launcher.down(settings)
    if as_json:
        print_json(_document(settings, check=False))


def down(ctx: typer.Context, state_dir: Path | None = StateDir, as_json: bool = JSON_FLAG) -> None:
    """Stop the processor, projector and worker, then the stack. Idempotent."""
    settings = settings_with_state_dir(ctx, state_dir)
    began = time.monotonic()
    with refusals(as_json):
        stopped = services.stop(settings)
        stack = launcher.down(settings)
    document = _document(settings, check=False)
    document["stopped"] = sorted(stopped + (sorted(stack.services) if stack else []))
    document["seconds"] = round(time.monotonic() - began, 2)
    if as_json:
        print_json(document)
    else:
        console.print(f"stopped: {', '.join(document['stopped']) or 'nothing was running'}")


def restart(
    ctx: typer.Context,
    component: str = typer.Argument(..., help="processor, worker, projector, reconciler or api."),
    state_dir: Path | None = StateDir,
    as_json: bool = JSON_FLAG,
) -> None:
    """Restart one of the processor, worker, projector, reconciler; the rest keeps running."""
    settings = settings_with_state_dir(ctx, state_dir)
    with refusals(as_json):
        # Refused before looking at the stack: a wrong name is wrong either way.
        services.check_name(component)
        stack = launcher.status(settings)
        down = [n for n, s in stack["services"].items() if s["state"] != "up"]
        if down:
            raise ServiceUnavailable(
                f"{', '.join(down)} not up under {stack['state_dir']}; "
                "start the stack first (`flowledger up --detach`)",
                code=STACK_NOT_RUNNING,
                services=down,
            )
        services.restart(settings, component, _child_env(settings))
    document = _document(settings, check=False)
    document["restarted"] = [component]
    if as_json:
        print_json(document)
    else:
        _render(document, f"restart {component}")
