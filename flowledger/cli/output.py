"""How every command speaks: one JSON document on stdout with --json, rich for people,
and errors as {"error": {...}} with the exit code the error carries (the one mapping:
0 ok, 1 a check found a problem, 2 refused input, 3 a service is unavailable)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from flowledger.errors import (
    EXIT_CHECK_FAILED,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    FlowledgerError,
)

console = Console()
err_console = Console(stderr=True)

# The one --json option of every command.
JSON_FLAG = typer.Option(False, "--json", help="Print one JSON document.")

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "JSON_FLAG",
    "print_json",
    "refusals",
]


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, default=_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def refuse(error: FlowledgerError, as_json: bool, exit_code: int | None = None) -> NoReturn:
    """Report the error and exit with its code (or the one given, for a command whose
    contract says otherwise)."""
    if as_json:
        print_json({"error": error.to_dict()})
    else:
        err_console.print(f"[bold red]{error.code}[/]: {error.message}")
        for key, value in error.context.items():
            if value is not None:
                err_console.print(f"  {key}: {value}")
    raise typer.Exit(error.exit if exit_code is None else exit_code)


@contextmanager
def refusals(as_json: bool) -> Iterator[None]:
    """Turn any FlowledgerError raised inside into the CLI's error form and exit code."""
    try:
        yield
    except FlowledgerError as exc:
        refuse(exc, as_json)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=title, show_lines=False)
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*["" if cell is None else str(cell) for cell in row])
    return out


def show(as_json: bool, document: Any, human: Callable[[], None]) -> None:
    if as_json:
        print_json(document)
    else:
        human()
