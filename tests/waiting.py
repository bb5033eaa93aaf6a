"""Waiting in tests: on a condition, under a deadline, never a bare sleep. The one
polling interval of the suite lives here."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.1


class Timeout(AssertionError):
    """The condition did not hold in time: the test fails (it never skips)."""


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, describe: Callable[[], str] | None = None
) -> Any:
    """Call `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{describe()}" if describe is not None else ""
            raise Timeout(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(POLL_S)


async def until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """`wait_for` for async tests: a plain `check` runs in a thread, so the loop stays
    free; a coroutine function is awaited."""
    deadline = time.monotonic() + timeout
    while True:
        if inspect.iscoroutinefunction(check):
            value = await check()
        else:
            value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def holds(check: Callable[[], Any], seconds: float, what: str) -> None:
    """The other side of `until`, polled by it: `check` stays truthy for `seconds`
    (something that must not happen, such as a paused schedule starting a run, does
    not). A lapse fails at once; `until` timing out is the pass."""

    async def lapsed() -> bool:
        value = (
            await check() if inspect.iscoroutinefunction(check) else await asyncio.to_thread(check)
        )
        return not value

    try:
        await until(lapsed, seconds, what)
    except Timeout:
        return
    raise AssertionError(f"{what} stopped holding within {seconds}s")
