"""The projector's Prometheus families, in a registry of its own instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from projections.apply import BatchResult
from projections.records import Slot

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProjectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "flowledger_projector_records",
            "Records read by the projector, by topic and outcome (applied, skipped, refused).",
            ["topic", "outcome"],
            registry=r,
        )
        self.batch = Histogram(
            "flowledger_projector_batch_seconds",
            "Time to plan and write one batch (its transaction with the checkpoints).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "flowledger_projector_lag_records",
            "Records of an owned partition not yet applied.",
            ["topic", "partition"],
            registry=r,
        )
        self.errors = Counter(
            "flowledger_projector_errors",
            "Records the projector could not apply (kept in projection_errors).",
            registry=r,
        )
        self._lagging: set[Slot] = set()

    def batch_done(self, result: BatchResult) -> None:
        for (topic, outcome), count in result.outcomes.items():
            self.records.labels(topic, outcome).inc(count)
        self.errors.inc(result.errors)
        self.batch.observe(result.seconds)

    def set_lag(self, lags: dict[Slot, int]) -> None:
        for topic, partition in self._lagging - lags.keys():
            self.lag.remove(topic, str(partition))
        for (topic, partition), lag in lags.items():
            self.lag.labels(topic, str(partition)).set(lag)
        self._lagging = set(lags)
