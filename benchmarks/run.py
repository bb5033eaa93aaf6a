"""Every benchmark on one local stack, printed as one JSON document: each harness's
figures under its name, and at the top level the headline figures with every ratio
against the baseline measured in the same run, and whether each target is met.

    .venv/bin/python benchmarks/run.py [--only NAME ...] [--quick] [--json]

NAME is one of expressions, runtime, processor, projector, replay. Each harness gets a
topic prefix and task queue of its own on the shared stack, so that none reads
another's records. --quick runs small samples (for iterating; the figures are noisier).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, Python puts benchmarks/ on the path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import expressions, processor, projector, replay, runtime
from benchmarks._stack import fresh_topics, local_stack
from flowledger.settings import Settings

NAMES = ("expressions", "runtime", "processor", "projector", "replay")

# (harness, its key) of each headline figure.
HEADLINE: dict[str, tuple[str, str]] = {
    "expression_ratio": ("expressions", "expression_ratio"),
    "steps_per_s": ("runtime", "steps_per_s"),
    "simple_run_ratio": ("runtime", "simple_run_ratio"),
    "signal_ratio": ("processor", "signal_ratio"),
    "route_no_wait_per_s": ("processor", "route_no_wait_per_s"),
    "wake_p99_ms": ("processor", "wake_p99_ms"),
    "projector_sqlite_per_s": ("projector", "sqlite_per_s"),
    "projector_postgres_per_s": ("projector", "postgres_per_s"),
    "rebuild_ratio": ("replay", "rebuild_vs_live_ratio"),
}

# The targets of issue 20: (figure, comparison, bound).
TARGETS: tuple[tuple[str, Callable[[float, float], bool], float], ...] = (
    ("expression_ratio", operator.ge, 0.95),
    ("steps_per_s", operator.ge, 2000),
    ("simple_run_ratio", operator.ge, 0.8),
    ("signal_ratio", operator.ge, 0.9),
    ("route_no_wait_per_s", operator.ge, 20_000),
    ("wake_p99_ratio", operator.le, 2.0),
    ("projector_sqlite_per_s", operator.ge, 60_000),
    ("projector_postgres_per_s", operator.ge, 40_000),
    ("rebuild_ratio", operator.ge, 1.2),
)

# Sample sizes: (full, quick).
SIZES: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "expressions": ({"rounds": 9}, {"rounds": 9}),
    "runtime": (
        {"steps": 2000, "runs": 100, "rounds": 4},
        {"steps": 1000, "runs": 60, "rounds": 4},
    ),
    "processor": (
        {"events": 5000, "runs": 500, "wakes": 100, "rounds": 2},
        {"events": 2000, "runs": 100, "wakes": 30, "rounds": 2},
    ),
    "projector": ({"events": 200_000}, {"events": 50_000}),
    "replay": ({"events": 200_000}, {"events": 50_000}),
}


def _harness(name: str, settings: Settings, quick: bool, tmp: Path) -> dict[str, Any]:
    size = SIZES.get(name, ({}, {}))[1 if quick else 0]
    if name == "expressions":
        return expressions.measure(size["rounds"])
    own = fresh_topics(settings)
    if name == "runtime":
        return asyncio.run(runtime.measure(own, size["steps"], size["runs"], rounds=size["rounds"]))
    if name == "processor":
        logs = tmp / "processor-logs"
        logs.mkdir()
        return asyncio.run(
            processor.measure(
                own, size["events"], size["runs"], size["wakes"], size["rounds"], logs
            )
        )
    if name == "projector":
        place = tmp / "projector"
        place.mkdir()
        return projector.measure(own, size["events"], 10_000, place)
    place = tmp / "replay"
    place.mkdir()
    return replay.measure(own, size["events"], place)


def headline(figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's keys (None for a harness not run) and every target's verdict."""
    out: dict[str, Any] = {
        key: figures.get(harness, {}).get(field) for key, (harness, field) in HEADLINE.items()
    }
    bare = figures.get("processor", {}).get("bare_wake_p99_ms")
    wake = out["wake_p99_ms"]
    out["wake_p99_ratio"] = round(wake / bare, 3) if wake is not None and bare else None
    out["targets"] = {
        key: {
            "value": out[key],
            "target": f"{'>=' if compare is operator.ge else '<='} {bound}",
            "met": None if out[key] is None else bool(compare(out[key], bound)),
        }
        for key, compare, bound in TARGETS
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument("--quick", action="store_true", help="small samples")
    parser.add_argument("--json", action="store_true", help="print only the JSON document")
    args = parser.parse_args()
    figures: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    with (
        local_stack() as settings,
        tempfile.TemporaryDirectory(prefix="flowledger-bench-run-") as tmp_dir,
    ):
        tmp = Path(tmp_dir)
        # postgres (the projector's private cluster) reaches its data directory here
        tmp.chmod(0o755)
        for name in NAMES:
            if name not in args.only:
                continue
            began = time.monotonic()
            figures[name] = _harness(name, settings, args.quick, tmp)
            seconds[name] = round(time.monotonic() - began, 1)
            if not args.json:
                print(f"{name} ({seconds[name]} s): {json.dumps(figures[name])}", flush=True)
    document = {**headline(figures), "quick": args.quick, "seconds": seconds, **figures}
    print(json.dumps(document) if args.json else json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
