"""`take`: a batch of what is there, or the first record to come, never a wait for a
full batch."""

from __future__ import annotations

from typing import Any

from topics.consuming import take


class Queue:
    """Stands in for a consumer's fetched records: `consume` pops what is there, and
    `arriving` comes only to a call that waits."""

    def __init__(self, ready: list[str], arriving: list[str] | None = None) -> None:
        self.ready = ready
        self.arriving = arriving or []
        self.calls: list[tuple[int, float]] = []

    def consume(self, n: int, timeout: float) -> list[str]:
        self.calls.append((n, timeout))
        if timeout > 0 and not self.ready:
            self.ready, self.arriving = self.arriving, []
        out, self.ready = self.ready[:n], self.ready[n:]
        return out


def test_what_is_there_is_taken_without_waiting() -> None:
    q = Queue(["a", "b", "c"])
    assert take(q, 2, 1.0) == ["a", "b"]  # type: ignore[arg-type]
    assert q.calls == [(2, 0)]


def test_when_nothing_is_there_only_the_first_record_is_waited_for() -> None:
    q = Queue([], arriving=["a", "b", "c"])
    got: list[Any] = take(q, 10, 1.0)  # type: ignore[arg-type]
    assert got == ["a", "b", "c"]
    assert q.calls == [(10, 0), (1, 1.0), (9, 0)]


def test_nothing_comes() -> None:
    q = Queue([])
    assert take(q, 10, 0.5) == []  # type: ignore[arg-type]
    assert q.calls == [(10, 0), (1, 0.5)]
