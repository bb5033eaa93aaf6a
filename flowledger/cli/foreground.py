"""What the long-running commands (processor, projector) share: stop cleanly on
Ctrl-C or SIGTERM, and report their run statistics the same way."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol

import typer

from flowledger.cli.output import EXIT_CHECK_FAILED, console, print_json


class Stats(Protocol):
    caught_up: bool

    def as_dict(self) -> dict[str, Any]: ...


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM; the previous handlers come back afterwards."""
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def report(stats: Stats, as_json: bool, until_idle: bool, stop: threading.Event) -> None:
    if as_json:
        print_json(stats.as_dict())
    else:
        console.print(stats.as_dict())
    # --until-idle is a check: not catching up in time (unless asked to stop) fails it.
    if until_idle and not stats.caught_up and not stop.is_set():
        raise typer.Exit(EXIT_CHECK_FAILED)
