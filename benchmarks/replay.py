"""Replay rebuild throughput: produce N generated runtime events, let the live
projector build the tables (its rate is the baseline measured in the same run),
then `replay rebuild` them into a fresh SQLite file at the projector's cut and
verify the two are identical. The last line of output is one JSON object.

    .venv/bin/python benchmarks/replay.py [--events 200000] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from pathlib import Path

# Sibling modules: the benchmarks run as scripts, `.venv/bin/python benchmarks/NAME.py`.
from _runtime_events import produce
from _stack import local_stack

from projections import db
from projections.projector import Projector, tune_gc
from projections.replay import cut as cuts
from projections.replay.rebuild import rebuild
from projections.replay.verify import compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    # the collector settings of `flowledger projector` and `replay rebuild`
    tune_gc()
    with local_stack() as settings, tempfile.TemporaryDirectory() as tmp:
        live_url = f"sqlite:///{Path(tmp) / 'live.db'}"
        settings = settings.model_copy(
            update={"database": settings.database.model_copy(update={"url": live_url})}
        )
        events = produce(settings, args.events)
        say(f"produced {events} runtime events")

        live = db.engine(live_url)
        stats = Projector(
            settings, engine=live, group_id=f"bench-{uuid.uuid4().hex[:6]}"
        ).run_until_idle(600)
        # From the first record read: the group join is not projecting.
        live_seconds = stats.busy_seconds or stats.seconds
        say(f"live projector: {stats.as_dict()}")
        cut = cuts.from_checkpoints(settings, live)

        target = db.engine(f"sqlite:///{Path(tmp) / 'rebuilt.db'}")
        rebuilt = rebuild(settings, target, cut)
        say(f"rebuild: {rebuilt.as_dict()}")
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
