"""The one way flowledger retries a call, built on tenacity: doubling delays up to a
cap, only for the failures a predicate calls transient, and bounded either by a
deadline (`until_deadline`) or by a stop request (`until_stopped`, for services that
retry for as long as they run and must still stop promptly)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

Transient = Callable[[BaseException], bool]


class Stopped(Exception):
    """Asked to stop while still retrying: the work was not done."""


def until_deadline(
    call: Callable[[], T],
    *,
    transient: Transient,
    seconds: float,
    initial: float = 0.1,
    cap: float = 2.0,
) -> T:
    """``call()`` again after each transient failure until ``seconds`` have passed;
    then (or on any other failure) its last exception is raised as it was."""
    for attempt in Retrying(
        stop=stop_after_delay(seconds),
        wait=wait_exponential(multiplier=initial, min=initial, max=cap),
        retry=retry_if_exception(transient),
        reraise=True,
    ):
        with attempt:
            return call()
    raise AssertionError("unreachable: tenacity reraises the last failure")


async def until_stopped(
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    transient: Transient,
    stop: threading.Event,
    initial: float,
    cap: float,
    on_retry: Callable[[], None] = lambda: None,
) -> T:
    """``await call()`` until it succeeds. A stop request ends the retrying after a
    failed attempt, never before the first: work being finished after a stop still
    gets its try. Raises Stopped then."""

    def stopping(state: RetryCallState) -> bool:
        return stop.is_set()

    def before_sleep(state: RetryCallState) -> None:
        on_retry()
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s failed, retrying in %.1fs: %s", what, delay, error)

    async def sleep(seconds: float) -> None:
        # In small steps, so that a stop request is honoured promptly.
        end = asyncio.get_running_loop().time() + seconds
        while not stop.is_set():
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))

    retrying = AsyncRetrying(
        stop=stopping,
        wait=wait_exponential(multiplier=initial, min=initial, max=cap),
        retry=retry_if_exception(transient),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await call()
    except Exception as exc:
        if stop.is_set() and transient(exc):
            raise Stopped(what) from exc
        raise
    raise AssertionError("unreachable: tenacity reraises the last failure")
