"""`flowledger correlate`: resolve one event's correlation key (ARCHITECTURE §7)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from flowledger.cli import context
from flowledger.cli.output import JSON_FLAG, console, print_json, refusals
from flowledger.errors import InvalidInput
from flowledger.operations import json_input as inputs
from flowledger.settings import RecordSettings
from processors.correlation import CorrelationPaths, load_paths, resolve


def _load_event(file: Path, limits: RecordSettings) -> Mapping[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read --event: {exc}", file=str(file)) from None
    event = inputs.parse(text, "--event", limits, file=str(file))
    if not isinstance(event, dict):
        raise InvalidInput("--event must hold a JSON object (an event envelope)", file=str(file))
    return event


def correlate(
    ctx: typer.Context,
    event_file: Path = typer.Option(..., "--event", help="A JSON file holding one event."),
    paths: str | None = typer.Option(
        None, "--paths", help="Derivation paths as a JSON object (overrides settings)."
    ),
    paths_file: Path | None = typer.Option(
        None, "--paths-file", help="Read the derivation paths from this JSON file."
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """Resolve an event's correlation key and say where it came from."""
    with refusals(as_json):
        configured: CorrelationPaths
        if paths is not None or paths_file is not None:
            configured = load_paths(paths, paths_file)
        else:
            section = context.settings(ctx).correlation
            configured = load_paths(section.paths, section.paths_file)
        event = _load_event(event_file, context.settings(ctx).records)
        result = resolve(event, configured)
    if as_json:
        print_json(result.to_dict())
    else:
        key = "[dim](none)[/]" if result.key is None else f"[bold]{result.key}[/]"
        console.print(f"correlation key: {key}")
        console.print(f"source: {result.source}")
        console.print(f"detail: {result.detail}")
