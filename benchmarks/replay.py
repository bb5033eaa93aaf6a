"""Replay rebuild throughput: produce N generated runtime events, let the live
projector build the tables (its rate is the baseline measured in the same run),
then `replay rebuild` them into a fresh SQLite file at the projector's cut and
verify the two are identical. Prints one JSON object.

    .venv/bin/python benchmarks/replay.py [--events 200000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._stack import local_stack
from benchmarks.projector import produce
from projections import db
from projections.projector import Projector, tune_gc
from projections.replay import cut as cuts
from projections.replay.rebuild import rebuild
from projections.replay.verify import compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    # the collector settings of `flowledger projector` and `replay rebuild`
    tune_gc()
    with local_stack() as settings, tempfile.TemporaryDirectory() as tmp:
        live_url = f"sqlite:///{Path(tmp) / 'live.db'}"
        settings = settings.model_copy(
            update={"database": settings.database.model_copy(update={"url": live_url})}
        )
        events = produce(settings, args.events)

        live = db.engine(live_url)
        stats = Projector(
            settings, engine=live, group_id=f"bench-{uuid.uuid4().hex[:6]}"
        ).run_until_idle(600)
        # From the first record read: the group join is not projecting.
        live_seconds = stats.busy_seconds or stats.seconds
        cut = cuts.from_checkpoints(settings, live)

        target = db.engine(f"sqlite:///{Path(tmp) / 'rebuilt.db'}")
        rebuilt = rebuild(settings, target, cut)
        differences = compare(live, target)
        live.dispose()
        target.dispose()
    live_rate = stats.records / live_seconds if live_seconds else 0.0
    rebuild_rate = rebuilt.events / rebuilt.seconds if rebuilt.seconds else 0.0
    print(
        json.dumps(
            {
                "events": events,
                "live_projector_per_s": round(live_rate, 1),
                "rebuild_per_s": round(rebuild_rate, 1),
                "rebuild_vs_live_ratio": round(rebuild_rate / live_rate, 3) if live_rate else None,
                "identical": not differences,
            }
        )
    )


if __name__ == "__main__":
    main()
