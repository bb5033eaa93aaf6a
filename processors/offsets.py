"""The offset window: which ingress offsets may be committed. Batches are handed over
in consumption order and may finish in any order; a partition's offset moves only past
a prefix of batches that are all done, so a commit never covers a record whose effects
(signals, starts, audit) are still in flight or failed. Pure: no Kafka, no asyncio."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Slot(Generic[T]):
    """One batch in the window: what it carries (for the caller), and per partition the
    offset after its last record."""

    item: T
    ends: dict[int, int]
    keys: set[str] = field(default_factory=set)


class OffsetWindow(Generic[T]):
    def __init__(self) -> None:
        self._slots: deque[Slot[T]] = deque()
        # Completion keys of the batches in flight: a second copy of an event in
        # flight is a duplicate too (its offset is committed only after the first).
        self.keys: set[str] = set()
        # Per owned partition, the offset after the last record fully handled.
        self.next: dict[int, int] = {}
        # What was last sent in a commit per partition, so a commit sends only what
        # moved; and what a commit that waited for the broker's answer confirmed.
        self.committed: dict[int, int] = {}
        self.confirmed: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __bool__(self) -> bool:
        return bool(self._slots)

    @property
    def oldest(self) -> T:
        return self._slots[0].item

    def items(self) -> list[T]:
        return [s.item for s in self._slots]

    def add(self, item: T, ends: dict[int, int], keys: Iterable[str] = ()) -> None:
        slot = Slot(item, dict(ends), set(keys))
        self.keys |= slot.keys
        self._slots.append(slot)

    def settle(self, done: Callable[[T], bool], owned: Container[int]) -> list[T]:
        """Move the offsets of owned partitions past every done batch at the front and
        return those batches; a batch not done (or failed, for the caller to decide)
        keeps everything behind it in place."""
        settled: list[T] = []
        while self._slots and done(self._slots[0].item):
            head = self._slots.popleft()
            self.keys -= head.keys
            for partition, end in head.ends.items():
                if partition in owned:
                    self.next[partition] = end
            settled.append(head.item)
        return settled

    def targets(self, only: Container[int] | None = None, confirm: bool = False) -> dict[int, int]:
        """The offsets to commit now: those that moved since the last commit, or with
        ``confirm`` since the last confirmed one (a commit that was sent without waiting
        may have failed: before the partitions change hands, it is sent again)."""
        last = self.confirmed if confirm else self.committed
        return {
            p: nxt
            for p, nxt in self.next.items()
            if (only is None or p in only) and last.get(p) != nxt
        }

    def committed_at(self, offsets: dict[int, int], confirmed: bool = False) -> None:
        self.committed.update(offsets)
        if confirmed:
            self.confirmed.update(offsets)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked or lost: their next owner starts from the last commit."""
        for p in partitions:
            self.next.pop(p, None)
            self.committed.pop(p, None)
            self.confirmed.pop(p, None)
