"""The de-duplication horizon, pure: a set and a mapping whose entries carry the time
their event was received and are forgotten once older than the horizon (a time, not a
count: how long a duplicate is recognised does not depend on the traffic).

Forgetting is safe: a copy of an event older than the horizon is processed again, and
every effect of that is idempotent (the workflow drops an `event_id` it has seen, a
trigger's workflow id is fixed and Temporal rejects a reused one, the audit record has
the same key and content)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class HorizonDict(Generic[K, V]):
    """Entries in the order they were written, each with its event's receipt time.
    `prune` drops from the oldest end while the entry there is past the horizon, so an
    entry lives at least the horizon (longer when written after a younger one)."""

    def __init__(self, horizon: timedelta) -> None:
        self.horizon = horizon
        self.forgotten = 0
        self._items: OrderedDict[K, tuple[datetime, V]] = OrderedDict()

    def copy(self) -> HorizonDict[K, V]:
        other: HorizonDict[K, V] = HorizonDict(self.horizon)
        other._items = OrderedDict(self._items)
        return other

    def put(self, key: K, value: V, at: datetime) -> None:
        found = self._items.get(key)
        if found is not None and found[0] > at:
            at = found[0]
        self._items[key] = (at, value)
        self._items.move_to_end(key)

    def get(self, key: K, default: V) -> V:
        found = self._items.get(key)
        return default if found is None else found[1]

    def __getitem__(self, key: K) -> V:
        return self._items[key][1]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def entries(self) -> Iterator[tuple[K, datetime, V]]:
        for key, (at, value) in self._items.items():
            yield key, at, value

    def prune(self, now: datetime) -> int:
        cutoff = now - self.horizon
        gone = 0
        while self._items:
            key = next(iter(self._items))
            if self._items[key][0] >= cutoff:
                break
            del self._items[key]
            gone += 1
        self.forgotten += gone
        return gone


class HorizonSet:
    """Completion keys with the receipt time of their event (see HorizonDict)."""

    def __init__(self, horizon: timedelta) -> None:
        self._entries: HorizonDict[str, None] = HorizonDict(horizon)

    @property
    def horizon(self) -> timedelta:
        return self._entries.horizon

    @property
    def forgotten(self) -> int:
        return self._entries.forgotten

    def copy(self) -> HorizonSet:
        other = HorizonSet(self.horizon)
        other._entries = self._entries.copy()
        return other

    def add(self, key: str, at: datetime) -> None:
        self._entries.put(key, None, at)

    def update(self, keys: Iterable[str], at: datetime) -> None:
        for key in keys:
            self.add(key, at)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterator[tuple[str, datetime]]:
        for key, at, _value in self._entries.entries():
            yield key, at

    def prune(self, now: datetime) -> int:
        return self._entries.prune(now)
