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
# Past this many run ids a complete cache stops remembering which runs it wrote.
WRITTEN_LIMIT = 2_000_000


class RunCache:
    """An entry is only ever a copy of what the database holds: the cache keeps, per
    partition, the checkpoint its entries are valid at, and a batch that finds a
    different checkpoint stored (another instance applied that partition meanwhile,
    or a transaction of ours failed after all) drops that partition's entries first.
    States join the cache only after their transaction has committed."""

    def __init__(self, limit: int = RUN_CACHE_LIMIT, *, complete: bool = False) -> None:
        """``complete``: the database holds no run yet and only the batches this cache
        is told about will write to it (a rebuild into an emptied target), so a run
        never committed through it is known to be absent and is not looked up."""
        self.limit = limit
        self.states: dict[str, tuple[Slot, RunState]] = {}
        self.valid_at: dict[Slot, int] = {}
        # every run committed so far, while the cache is complete (else None)
        self.written: set[str] | None = set() if complete else None

    def forget(self, slots: Iterable[Slot]) -> None:
        gone = set(slots)
        if gone:
            # someone else may write these partitions now
            self.written = None
        self._drop(gone)

    def _drop(self, gone: set[Slot]) -> None:
        if not gone:
            return
        for slot in gone:
            self.valid_at.pop(slot, None)
        self.states = {k: v for k, v in self.states.items() if v[0] not in gone}

    def clear(self) -> None:
        self.states.clear()
        self.valid_at.clear()
        self.written = None

    def sync(self, stored: Mapping[Slot, int]) -> None:
        """Drop what the stored checkpoints show to be stale."""
        stale = [slot for slot, at in stored.items() if self.valid_at.get(slot) != at]
        if any(self.valid_at.get(slot) is not None for slot in stale):
            # A checkpoint moved behind our back (or a commit we took for failed went
            # through): what was written is no longer known.
            self.written = None
        self._drop(set(stale))
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
            elif self.written is not None and run_id not in self.written:
                found[run_id] = None
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
        if self.written is not None:
            self.written.update(runs)
            if len(self.written) > WRITTEN_LIMIT:
                # the database is read from here on, which is always right
                self.written = None
        for run_id, entry in runs.items():
            # Nothing normally follows the end of a run (a late copy is read back), and
            # a partition forgotten meanwhile must not regain entries.
            if entry[1].row.status in TERMINAL or entry[0] not in self.valid_at:
                states.pop(run_id, None)
            else:
                states[run_id] = entry
        if len(states) > self.limit:
            states.clear()
