"""Rebuild the projection tables from offset 0 up to a cut, into an empty database
or schema, through the same write path and pipeline the live projector uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, MetaData, text

from flowledger.settings import Settings
from projections import migrate
from projections.projector import topic_kinds
from projections.replay.cut import Cut
from projections.replay.helpers import Team, helper_count
from projections.replay.ranges import apply_range, pipeline_for

# Definitions first, so runs can refer to them; then what the runs did; then audits.
_ORDER = {"definitions": 0, "runtime": 1, "audit": 2, "operators": 3}
Progress = Callable[[int, int], None]


@dataclass
class RebuildStats:
    events: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(rate, 1),
        }


def reset(target: Engine) -> None:
    """Empty the target and create the tables afresh: a rebuild starts from nothing.
    An action ledger the target holds stays: it is no projection, nothing rebuilds it."""
    meta = MetaData()
    meta.reflect(target)
    with target.begin() as conn:
        for table in reversed(meta.sorted_tables):
            if table.name in migrate.KEPT_BY_REBUILD:
                continue
            conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}"'))
    migrate.upgrade(target)


def rebuild(
    settings: Settings,
    target: Engine,
    cut: Cut,
    *,
    start: Cut | None = None,
    progress: Progress | None = None,
    fresh: bool = True,
    helper_setup: Callable[[], None] | None = None,
) -> RebuildStats:
    """Apply every record below the cut to `target` (emptied first unless `fresh` is
    False, in which case reading resumes from `start`). The runtime partitions are
    shared with helper processes (`projector.rebuild_processes`); `helper_setup`, a
    module-level function, runs first in each helper (the CLI's collector settings)."""
    if fresh:
        reset(target)
    kinds = topic_kinds(settings)
    begin = start or {}
    ranges = {s: (begin.get(s, 0), end) for s, end in cut.items() if end > begin.get(s, 0)}
    total = sum(end - first for first, end in ranges.values())
    # Every record of a run is on its run's runtime partition (the topic is keyed by
    # run id), so those partitions fold apart; the biggest go first.
    shared = sorted(
        (s for s in ranges if kinds[s[0]] == "runtime"),
        key=lambda s: (ranges[s][0] - ranges[s][1], s),
    )
    own = sorted(
        (s for s in ranges if kinds[s[0]] != "runtime"), key=lambda s: (_ORDER[kinds[s[0]]], s)
    )
    helpers = helper_count(settings, target, len(shared))
    stats = RebuildStats()

    def count(records: int) -> None:
        stats.events += records
        if progress:
            progress(stats.events, total)

    started = time.monotonic()
    tasks = [(slot, ranges[slot]) for slot in shared]
    with Team(settings, target, helpers, fresh, helper_setup, tasks, count) as team:
        # Each process writes the runs of the runtime partitions it takes, and all of
        # them: the cache of a fresh rebuild knows which runs exist, in every process.
        pipeline = pipeline_for(settings, target, complete=fresh, count=count)
        try:
            for slot in own:
                apply_range(settings, pipeline, slot, ranges[slot], team.collect)
            while (task := team.take()) is not None:
                apply_range(settings, pipeline, *task, team.collect)
            pipeline.drain()
        finally:
            pipeline.close()
        team.finish()
    stats.seconds = time.monotonic() - started
    return stats
