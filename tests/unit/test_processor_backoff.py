"""The processor's retry policy: the first attempt is made outside the retry helper,
and a failure hands the rest to it with the same outcome and count as before."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest

from flowledger.errors import AuthenticationFailed
from flowledger.settings import Settings
from processors.effects import Backoff, Stopped, Transient


def backoff(stop: threading.Event | None = None) -> Backoff:
    settings = Settings(processor={"retry_initial_backoff_s": 0.01, "retry_max_backoff_s": 0.02})
    return Backoff(settings, stop or threading.Event())


def failing(times: int, exc: Exception) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "ok"

    return calls, call


def test_a_call_that_succeeds_is_made_once_and_not_counted() -> None:
    b = backoff()
    calls, call = failing(0, Transient("down"))
    assert asyncio.run(b.retry("x", call)) == "ok"
    assert (len(calls), b.retries) == (1, 0)


def test_transient_failures_are_retried_and_counted() -> None:
    b = backoff()
    calls, call = failing(3, Transient("down"))
    assert asyncio.run(b.retry("x", call)) == "ok"
    assert (len(calls), b.retries) == (4, 3)


def test_other_errors_are_raised_at_once() -> None:
    b = backoff()
    calls, call = failing(1, ValueError("bug"))
    with pytest.raises(ValueError):
        asyncio.run(b.retry("x", call))
    assert (len(calls), b.retries) == (1, 0)


def test_refused_credentials_are_not_retried() -> None:
    b = backoff()
    calls, call = failing(1, AuthenticationFailed("no"))
    with pytest.raises(AuthenticationFailed):
        asyncio.run(b.retry("x", call, on=(Exception,)))
    assert len(calls) == 1


def test_a_stop_request_ends_the_retrying_after_a_failed_attempt() -> None:
    stop = threading.Event()
    stop.set()
    b = backoff(stop)
    calls, call = failing(5, Transient("down"))
    # The first attempt is still made, whatever the stop request.
    with pytest.raises(Stopped):
        asyncio.run(b.retry("x", call))
    assert len(calls) == 1
