"""The worker's and the reconciler's Prometheus families, and the Temporal SDK's own
metrics. Steps, actions and run outcomes are counted from the runtime events the
worker publishes (the emit activity sees every one of them once Kafka has them), never
inside workflow code, which must stay deterministic under replay."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

EMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# The SDK's endpoint is asked from inside our /metrics handler: a scrape must not
# hang on it.
SDK_SCRAPE_TIMEOUT_S = 2.0


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.steps = Counter(
            "flowledger_worker_steps",
            "Steps completed, by step type and outcome (succeeded, failed, skipped).",
            ["step_type", "outcome"],
            registry=r,
        )
        self.actions = Counter(
            "flowledger_worker_actions",
            "Action invocations, by action and outcome (succeeded, failed, cached).",
            ["action", "outcome"],
            registry=r,
        )
        self.runs = Counter(
            "flowledger_worker_runs_completed",
            "Runs finished by their workflow code, by status (SUCCEEDED, FAILED, CANCELED).",
            ["status"],
            registry=r,
        )
        self.emit = Histogram(
            "flowledger_worker_emit_seconds",
            "One emit_runtime_events activity: its events produced and acknowledged by Kafka.",
            buckets=EMIT_BUCKETS,
            registry=r,
        )
        for status in ("SUCCEEDED", "FAILED", "CANCELED"):
            self.runs.labels(status)

    def emitted(self, events: Iterable[dict[str, Any]], seconds: float) -> None:
        """Runtime events Kafka has acknowledged (as JSON dicts)."""
        self.emit.observe(seconds)
        for event in events:
            kind = event.get("type")
            data = event.get("data") or {}
            if kind == "StepCompleted":
                self.steps.labels(
                    str(data.get("step_type")), str(data.get("status", "")).lower()
                ).inc()
            elif kind == "ActionInvocation":
                outcome = "cached" if data.get("cached") else str(data.get("status", "")).lower()
                self.actions.labels(str(data.get("action")), outcome).inc()
            elif kind == "RunCompleted":
                self.runs.labels(str(data.get("status"))).inc()


class ReconcilerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "flowledger_reconciler_polls",
            "Looks at Temporal's visibility, by outcome (ok, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.published = Counter(
            "flowledger_reconciler_published",
            "Records published to the runtime topic, by type (RunReconciled, RunReset).",
            ["type"],
            registry=self.registry,
        )


class SdkMetrics:
    """A Temporal runtime whose own Prometheus endpoint listens on a loopback port,
    read back into the service's /metrics so one scrape carries both."""

    def __init__(self) -> None:
        self.port = _free_loopback_port()
        self.runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(
                    bind_address=f"127.0.0.1:{self.port}", durations_as_seconds=True
                )
            )
        )

    def scrape(self) -> bytes:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=SDK_SCRAPE_TIMEOUT_S) as answer:
            body: bytes = answer.read()
        return body if body.endswith(b"\n") or not body else body + b"\n"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
