"""The processor's Prometheus families, in a registry of its own instance (several
processors in one test process must not share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flowledger.metrics import outcome_label

# From an event landing on the broker to Temporal acknowledging its signal; a held
# event's wake-up includes its time held (up to the early-event window).
WAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ProcessorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "flowledger_processor_records",
            "Ingress records by what became of them "
            "(processed, duplicate, refused, held; held ones later released or expired).",
            ["outcome"],
            registry=r,
        )
        self.signals = Counter(
            "flowledger_processor_signals",
            "deliver_event signals by outcome (delivered, workflow_closed, failed).",
            ["outcome"],
            registry=r,
        )
        self.starts = Counter(
            "flowledger_processor_starts",
            "Triggered starts by outcome (started, already_started, duplicate, refused, failed).",
            ["outcome"],
            registry=r,
        )
        self.deadletters = Counter(
            "flowledger_processor_deadletters",
            "Records written to the dead-letter topic, by reason code.",
            ["reason"],
            registry=r,
        )
        self.held = Gauge(
            "flowledger_processor_held_events",
            "Early events held for a wait not seen yet.",
            registry=r,
        )
        self.open_waits = Gauge(
            "flowledger_processor_open_waits",
            "Open waits in this instance's routing state (all of them when routing is "
            "replicated, those of its routing partitions when partitioned).",
            registry=r,
        )
        self.wake_latency = Histogram(
            "flowledger_processor_wake_latency_seconds",
            "Broker timestamp of an event to its signal acknowledged by Temporal.",
            buckets=WAKE_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "flowledger_processor_lag_records",
            "Ingress records of an owned partition not yet handled.",
            ["partition"],
            registry=r,
        )
        # Bound once: a label lookup per record takes the family's lock each time.
        self.outcome = {
            outcome: self.records.labels(outcome)
            for outcome in ("processed", "duplicate", "refused", "held", "released", "expired")
        }
        self._lagging: set[int] = set()
        self.signals.labels("delivered")
        self.starts.labels("started")

    def signal(self, outcome: str) -> None:
        self.signals.labels(outcome_label(outcome)).inc()

    def start(self, outcome: str) -> None:
        self.starts.labels(outcome_label(outcome)).inc()

    def set_lag(self, lags: dict[int, int]) -> None:
        for gone in self._lagging - lags.keys():
            self.lag.remove(str(gone))
        for partition, lag in lags.items():
            self.lag.labels(str(partition)).set(lag)
        self._lagging = set(lags)
