"""A throwaway local stack for a benchmark run (same launcher as `stack up`)."""

from __future__ import annotations

import contextlib
import gc
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from flowledger.settings import Settings
from flowledger.stack import launcher
from topics import admin

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def local_stack(database: str | None = None, rebalance_delay_ms: int = 0) -> Iterator[Settings]:
    with tempfile.TemporaryDirectory(prefix="flowledger-bench-") as tmp:
        base = Settings(
            stack={
                "state_dir": Path(tmp) / "stack",
                "cache_dir": REPO / ".flowledger" / "cache",
                "kafka_initial_rebalance_delay_ms": rebalance_delay_ms,
            }
        )
        state = launcher.up(base, database_choice=database)
        try:
            yield fresh_topics(launcher.settings_for(base, state))
        finally:
            gc.collect()
            launcher.down(base)


def fresh_topics(settings: Settings) -> Settings:
    """``settings`` with a topic prefix and task queue of their own, topics created: one
    harness's records never mix with another's on a shared stack (benchmarks/run.py)."""
    tag = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"bench{tag}."}),
            "temporal": settings.temporal.model_copy(update={"task_queue": f"bench-{tag}"}),
        }
    )
    admin.ensure(settings)
    return settings
