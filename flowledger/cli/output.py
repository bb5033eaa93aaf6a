"""How every command speaks: one JSON document on stdout with --json, rich for people,
and refusals as {"error": {...}} with exit code 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from flowledger.errors import AuthenticationFailed, FlowledgerError

console = Console()
err_console = Console(stderr=True)

EXIT_REFUSED = 2
EXIT_CHECK_FAILED = 1
EXIT_UNAVAILABLE = 3


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, default=_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def refuse(error: FlowledgerError, as_json: bool, exit_code: int = EXIT_REFUSED) -> NoReturn:
    if as_json:
        body = error.to_dict()
        if exit_code == EXIT_UNAVAILABLE:
            body["retryable"] = True
        print_json({"error": body})
    else:
        err_console.print(f"[bold red]{error.code}[/]: {error.message}")
        for key, value in error.context.items():
            if value is not None:
                err_console.print(f"  {key}: {value}")
    raise typer.Exit(exit_code)


@contextmanager
def refusals(as_json: bool, unavailable_exit: int = EXIT_REFUSED) -> Iterator[None]:
    """Turn any FlowledgerError raised inside into the CLI's refusal form. Commands
    that follow the service contract pass EXIT_UNAVAILABLE, so a retryable error (a
    service that did not answer) exits 3 instead of 2."""
    try:
        yield
    except AuthenticationFailed as exc:
        refuse(exc, as_json, EXIT_UNAVAILABLE)
    except FlowledgerError as exc:
        refuse(exc, as_json, unavailable_exit if exc.retryable else EXIT_REFUSED)


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
