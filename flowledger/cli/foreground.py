"""What the long-running commands (processor, projector) share: stop cleanly on
Ctrl-C or SIGTERM, and report their run statistics the same way."""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol

import typer

from flowledger.cli.output import EXIT_CHECK_FAILED, console, print_json


def tune_gc() -> None:
    """Collector settings for the long-running commands. A projector's batch allocates
    a few hundred thousand objects that all stay alive until its plan is written, and
    its run cache holds many long-lived ones; a processor holds every open wait, held
    event and completion key, and allocates a few hundred objects per record; a worker
    keeps its cached runs, each with its sandbox's copies of the modules. With the
    default thresholds the collector rescanned all of it over and over: a quarter of
    the projector's time, 1.8-2 s of the 5 s a processor took to route 30,000 events
    that it held, 15-25 % of a worker's CPU per step (docs/decisions.md). With a young
    generation of a million net allocations it runs a few times a run instead of
    hundreds. Reference counting frees almost everything; what only the collector
    frees (cycles: exceptions with their tracebacks, finished tasks) waits that long."""
    gc.freeze()
    gc.set_threshold(1_000_000, 50, 100)


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
