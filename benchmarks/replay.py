"""Replay rebuild throughput: produce N generated runtime events, let the live
projector build the tables (its rate is the baseline measured in the same run),
then `replay rebuild` them into a fresh SQLite file at the projector's cut and
verify the two are identical. The last line of output is one JSON object.

    .venv/bin/python benchmarks/replay.py [--events 200000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, Python puts benchmarks/ on the path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._runtime_events import produce
from benchmarks._stack import local_stack
from flowledger.cli.foreground import tune_gc
from flowledger.settings import Settings
from projections import db
from projections.projector import Projector
from projections.replay import cut as cuts
from projections.replay.rebuild import rebuild
from projections.replay.verify import compare


def measure(
    settings: Settings, events: int, tmp: Path, say: Callable[[str], None] = lambda _text: None
) -> dict[str, Any]:
    # the collector settings of `flowledger projector` and `replay rebuild`
    tune_gc()
    live_url = f"sqlite:///{tmp / 'live.db'}"
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": live_url})}
    )
    produced = produce(settings, events)
    say(f"produced {produced} runtime events")

    live = db.engine(live_url)
    stats = Projector(
        settings, engine=live, group_id=f"bench-{uuid.uuid4().hex[:6]}"
    ).run_until_idle(600)
    # From the first record read: the group join is not projecting.
    live_seconds = stats.busy_seconds or stats.seconds
    say(f"live projector: {stats.as_dict()}")
    cut = cuts.from_checkpoints(settings, live)

    target = db.engine(f"sqlite:///{tmp / 'rebuilt.db'}")
    rebuilt = rebuild(settings, target, cut, helper_setup=tune_gc)
    say(f"rebuild: {rebuilt.as_dict()}")
    differences = compare(live, target)
    live.dispose()
    target.dispose()
    live_rate = stats.records / live_seconds if live_seconds else 0.0
    rebuild_rate = rebuilt.events / rebuilt.seconds if rebuilt.seconds else 0.0
    return {
        "events": produced,
        "live_projector_per_s": round(live_rate, 1),
        "rebuild_per_s": round(rebuild_rate, 1),
        "rebuild_vs_live_ratio": round(rebuild_rate / live_rate, 3) if live_rate else None,
        "identical": not differences,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    with local_stack() as settings, tempfile.TemporaryDirectory() as tmp:
        figures = measure(settings, args.events, Path(tmp), say)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
