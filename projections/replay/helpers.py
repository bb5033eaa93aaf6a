"""The helper processes of a rebuild. Folding is per-record Python, so one process
keeps one core busy however many the machine has; helpers take runtime partitions
from a shared queue, each through a pipeline of its own into the same target, and
report back what they applied. The target's checkpoints are per partition and locked
per transaction, so they write side by side as two live projector instances do."""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Sequence
from multiprocessing.context import SpawnProcess
from types import TracebackType
from typing import Any

from sqlalchemy import Engine

from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from projections import db
from projections.codes import REBUILD_HELPER_FAILED
from projections.records import Slot
from projections.replay.ranges import apply_range, pipeline_for

Task = tuple[Slot, tuple[int, int]]  # a partition and its [first, end) offsets
# Spawned, not forked: the parent holds Kafka clients and their threads.
_CONTEXT = multiprocessing.get_context("spawn")
_PROGRESS, _DONE, _FAILED = "progress", "done", "failed"
_POLL_S = 0.5


def helper_count(settings: Settings, target: Engine, runtime_partitions: int) -> int:
    """Helpers beside this process: one per core (or `projector.rebuild_processes` in
    all), never more than there are runtime partitions to share, none for a database
    only this process can open."""
    url = target.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return 0
    wanted = settings.projector.rebuild_processes or os.cpu_count() or 1
    return max(0, min(wanted, runtime_partitions) - 1)


class Team:
    """This process and ``helpers`` others, sharing the ``shared`` tasks in order."""

    def __init__(
        self,
        settings: Settings,
        target: Engine,
        helpers: int,
        fresh: bool,
        setup: Callable[[], None] | None,
        shared: Sequence[Task],
        count: Callable[[int], None],
    ) -> None:
        self._count = count
        self._local = list(shared)
        self._processes: list[SpawnProcess] = []
        self._done = 0
        if not helpers:
            return
        self._tasks: Any = _CONTEXT.Queue()
        self._reports: Any = _CONTEXT.Queue()
        for task in shared:
            self._tasks.put(task)
        for _ in range(helpers + 1):
            self._tasks.put(None)
        url = target.url.render_as_string(hide_password=False)
        self._processes = [
            _CONTEXT.Process(
                target=_help,
                args=(settings, url, fresh, setup, self._tasks, self._reports),
                name=f"rebuild-helper-{n}",
                daemon=True,
            )
            for n in range(helpers)
        ]

    def __enter__(self) -> Team:
        for process in self._processes:
            process.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        error: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if error is not None:
            for process in self._processes:
                process.terminate()
        for process in self._processes:
            process.join()

    def take(self) -> Task | None:
        """The next shared task for this process, None when there is none left."""
        if not self._processes:
            return self._local.pop(0) if self._local else None
        task: Task | None = self._tasks.get(timeout=60)
        return task

    def collect(self) -> None:
        """Take the helpers' reports so far (raising the first failure)."""
        while self._processes:
            try:
                kind, value = self._reports.get_nowait()
            except queue.Empty:
                return
            self._take(kind, value)

    def finish(self) -> None:
        """Wait until every helper is done, counting what they apply meanwhile."""
        while self._done < len(self._processes):
            try:
                kind, value = self._reports.get(timeout=_POLL_S)
            except queue.Empty:
                self._check_alive()
                continue
            self._take(kind, value)

    def _take(self, kind: str, value: Any) -> None:
        if kind == _PROGRESS:
            self._count(value)
        elif kind == _DONE:
            self._done += 1
        else:
            raise value

    def _check_alive(self) -> None:
        # A helper killed from outside reports nothing; its tasks are not done.
        dead = [p for p in self._processes if p.exitcode not in (None, 0)]
        if dead:
            raise FlowledgerError(
                f"rebuild helper {dead[0].name} exited with {dead[0].exitcode}",
                code=REBUILD_HELPER_FAILED,
                retryable=True,
            )


def _help(
    settings: Settings,
    url: str,
    fresh: bool,
    setup: Callable[[], None] | None,
    tasks: Any,
    reports: Any,
) -> None:
    """A helper's whole life: apply tasks until the queue says stop, then report."""
    try:
        if setup is not None:
            setup()
        engine = db.engine(url)
        try:
            pipeline = pipeline_for(
                settings, engine, complete=fresh, count=lambda n: reports.put((_PROGRESS, n))
            )
            try:
                while (task := tasks.get(timeout=60)) is not None:
                    slot, span = task
                    apply_range(settings, pipeline, slot, span, lambda: None)
                pipeline.drain()
            finally:
                pipeline.close()
        finally:
            engine.dispose()
    except FlowledgerError as exc:
        reports.put((_FAILED, exc))
    except Exception as exc:  # anything else is a bug; its text is all that crosses
        reports.put(
            (
                _FAILED,
                FlowledgerError(f"rebuild helper failed: {exc!r}", code=REBUILD_HELPER_FAILED),
            )
        )
    else:
        reports.put((_DONE, None))
