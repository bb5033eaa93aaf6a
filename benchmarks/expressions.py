"""Expression throughput and the cost of a runaway expression stopped by the budget.

Prints one JSON document; runs in a few seconds.
`.venv/bin/python benchmarks/expressions.py [--json]`
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one compact JSON line")
    args = parser.parse_args()
    compiled = compile(CONDITION)
    assert compiled.evaluate(CONTEXT, CLOCK) is True
    uncached = _uncached_compiles()
    cached = _rate(lambda: compile(CONDITION))
    runaways = [_runaway(source) for source in RUNAWAYS]
    document = {
        "python": platform.python_version(),
        "condition": CONDITION,
        "evaluations_per_second": round(_rate(lambda: compiled.evaluate(CONTEXT, CLOCK))),
        "compiles_per_second_uncached": round(uncached),
        "compiles_per_second_cached": round(cached),
        "cache_speedup": round(cached / uncached, 1),
        "runaway": runaways,
        "worst_runaway_seconds": max(item["worst_seconds"] for item in runaways),
    }
    print(json.dumps(document) if args.json else json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
