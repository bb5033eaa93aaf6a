"""Bounded memory for the processor's bookkeeping, pure: a set and a mapping that keep
the most recently touched keys and forget the oldest beyond a limit.

Forgetting is safe here: an evicted completion key only means that a very late
duplicate of an old event is processed again, and every effect of that is idempotent
(the workflow drops an `event_id` it has seen, a trigger's workflow id is fixed, the
audit record has the same key and content)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, MutableSet
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedSet(MutableSet[str]):
    """A set of at most `limit` keys, least recently added or seen first to go."""

    def __init__(self, limit: int, items: Iterable[str] = ()) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.evicted = 0
        self._keys: OrderedDict[str, None] = OrderedDict()
        for item in items:
            self.add(item)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, value: str) -> None:
        if value in self._keys:
            self._keys.move_to_end(value)
            return
        self._keys[value] = None
        while len(self._keys) > self.limit:
            self._keys.popitem(last=False)
            self.evicted += 1

    def update(self, values: Iterable[str]) -> None:
        for value in values:
            self.add(value)

    def discard(self, value: str) -> None:
        self._keys.pop(value, None)


class BoundedDict(Generic[K, V]):
    """A mapping of at most `limit` entries, the least recently written first to go."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.evicted = 0
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, default: V) -> V:
        return self._items.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._items)
