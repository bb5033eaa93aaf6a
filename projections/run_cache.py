"""Run states kept between batches, so a batch reads from the database only the runs
it has not seen before."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from projections.fold_batch import RunStates
from projections.fold_runtime import TERMINAL, RunState
from projections.records import Slot

# Past this many states the cache starts over (from the database), which bounds memory
# without ever being wrong.
RUN_CACHE_LIMIT = 200_000


class RunCache:
    """An entry is only ever a copy of what the database holds: the cache keeps, per
    partition, the checkpoint its entries are valid at, and a batch that finds a
    different checkpoint stored (another instance applied that partition meanwhile,
    or a transaction of ours failed after all) drops that partition's entries first.
    States join the cache only after their transaction has committed."""

    def __init__(self, limit: int = RUN_CACHE_LIMIT) -> None:
        self.limit = limit
        self.states: dict[str, tuple[Slot, RunState]] = {}
        self.valid_at: dict[Slot, int] = {}

    def forget(self, slots: Iterable[Slot]) -> None:
        gone = set(slots)
        if not gone:
            return
        for slot in gone:
            self.valid_at.pop(slot, None)
        self.states = {k: v for k, v in self.states.items() if v[0] not in gone}

    def clear(self) -> None:
        self.states.clear()
        self.valid_at.clear()

    def sync(self, stored: Mapping[Slot, int]) -> None:
        """Drop what the stored checkpoints show to be stale."""
        stale = [slot for slot, at in stored.items() if self.valid_at.get(slot) != at]
        self.forget(stale)
        for slot in stale:
            self.valid_at[slot] = stored[slot]

    def lookup(
        self, run_ids: Iterable[str], slots: Mapping[str, Slot]
    ) -> tuple[RunStates, list[str]]:
        """Cached states, and the runs to read from the database."""
        found: RunStates = {}
        missing: list[str] = []
        for run_id in run_ids:
            entry = self.states.get(run_id)
            # An entry from another partition (the topic was re-partitioned) may be
            # stale: only the owner of a run's current partition keeps it current.
            if entry is not None and entry[0] == slots[run_id]:
                found[run_id] = entry[1]
            else:
                missing.append(run_id)
        return found, missing

    def committed(
        self, next_offsets: Mapping[Slot, int], runs: Mapping[str, tuple[Slot, RunState]]
    ) -> None:
        """A transaction that moved ``next_offsets`` and left ``runs`` has committed."""
        for slot, end in next_offsets.items():
            if self.valid_at.get(slot) is not None:
                self.valid_at[slot] = end
        states = self.states
        for run_id, entry in runs.items():
            # Nothing normally follows the end of a run (a late copy is read back), and
            # a partition forgotten meanwhile must not regain entries.
            if entry[1].row.status in TERMINAL or entry[0] not in self.valid_at:
                states.pop(run_id, None)
            else:
                states[run_id] = entry
        if len(states) > self.limit:
            states.clear()
