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
    gets its try. Raises Stopped then.

    The first attempt is made directly: nearly every call succeeds at once, and
    setting up tenacity's machinery cost more than a signal's own client work (about
    120 µs per call on this machine). From the first failure on tenacity takes over,
    with the delays it would have given (the first pause here, then twice that)."""

    def failed(exc: BaseException | None, delay: float) -> None:
        on_retry()
        log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)

    try:
        return await call()
    except Exception as exc:
        if not transient(exc):
            raise
        if stop.is_set():
            raise Stopped(what) from exc
        failed(exc, initial)
    await _pause(initial, stop)

    def stopping(state: RetryCallState) -> bool:
        return stop.is_set()

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        failed(error, state.next_action.sleep if state.next_action is not None else 0.0)

    later = min(2 * initial, cap)
    retrying = AsyncRetrying(
        stop=stopping,
        wait=wait_exponential(multiplier=later, min=later, max=cap),
        retry=retry_if_exception(transient),
        before_sleep=before_sleep,
        sleep=lambda seconds: _pause(seconds, stop),
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


async def _pause(seconds: float, stop: threading.Event) -> None:
    # In small steps, so that a stop request is honoured promptly.
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not stop.is_set():
        left = end - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.1))
