"""Expression throughput against bare jsonata-python, and the cost of a runaway
expression stopped by the budget.

- evaluations_per_second: a typical condition through `workflows.expressions`
  (compiled once, evaluated with its step meter, helpers and JSON checks);
- bare_jsonata_per_second: the same expression compiled once with
  `jsonata.Jsonata` and evaluated on the same data, what a user of jsonata-python
  would write; the two are measured alternately and `expression_ratio` is theirs.

Prints one JSON document; runs in a few seconds.
`.venv/bin/python benchmarks/expressions.py [--json]`
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jsonata import Jsonata

from workflows.expressions import (
    ExpressionError,
    cache_clear,
    compile,
)

CONDITION = "payload.amount > 100 and payload.status = 'open'"
CONTEXT = {"payload": {"amount": 150, "status": "open", "tags": ["a", "b"]}}
CLOCK = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RUNAWAYS = [
    "[1..100000000]",
    "[1..1000].[1..1000]",
    "[1..50000].($ * 2 + 1)",
    "[1..20000].{'a': $, 'b': $ * 2}",
    "[1..30000].(payload.amount > 100 and payload.status = 'open')",
]


def _rate(action: Callable[[], Any], seconds: float = 0.6) -> float:
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        action()
        count += 1
    return count / (time.perf_counter() - started)


def _uncached_compiles() -> float:
    def once() -> None:
        cache_clear()
        compile(CONDITION)

    return _rate(once)


def _runaway(source: str) -> dict[str, Any]:
    compiled = compile(source)
    worst = 0.0
    code = None
    for _ in range(3):
        started = time.perf_counter()
        try:
            compiled.evaluate(CONTEXT, CLOCK)
        except ExpressionError as exc:
            code = exc.code
        worst = max(worst, time.perf_counter() - started)
    return {"expression": source, "code": code, "worst_seconds": round(worst, 4)}


def measure(rounds: int = 5) -> dict[str, Any]:
    """Every figure of this harness (no stack needed)."""
    compiled = compile(CONDITION)
    assert compiled.evaluate(CONTEXT, CLOCK) is True
    bare = Jsonata(CONDITION)
    assert bare.evaluate(CONTEXT) is True
    ours: list[float] = []
    theirs: list[float] = []
    # Alternating short rounds: a neighbour's burst of load hits both alike.
    for _ in range(rounds):
        ours.append(_rate(lambda: compiled.evaluate(CONTEXT, CLOCK), 0.3))
        theirs.append(_rate(lambda: bare.evaluate(CONTEXT), 0.3))
    uncached = _uncached_compiles()
    cached = _rate(lambda: compile(CONDITION))
    runaways = [_runaway(source) for source in RUNAWAYS]
    evaluations = statistics.median(ours)
    baseline = statistics.median(theirs)
    return {
        "python": platform.python_version(),
        "condition": CONDITION,
        "evaluations_per_second": round(evaluations),
        "bare_jsonata_per_second": round(baseline),
        "expression_ratio": round(evaluations / baseline, 3),
        "compiles_per_second_uncached": round(uncached),
        "compiles_per_second_cached": round(cached),
        "cache_speedup": round(cached / uncached, 1),
        "runaway": runaways,
        "worst_runaway_seconds": max(item["worst_seconds"] for item in runaways),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one compact JSON line")
    args = parser.parse_args()
    document = measure()
    print(json.dumps(document) if args.json else json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
