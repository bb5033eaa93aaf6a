"""Three brokers, as users run them: `stack up --kafka-brokers 3` is a KRaft cluster on
loopback whose topics have three replicas and take a write once two have it. The
broker leading most of the workload's partitions is SIGKILLed in the middle of the
workload, the work goes on on the other two, and `stack up` brings it back on its
ports with its data: nothing lost, nothing doubled, every run finishes, and a rebuild
from the log equals the live tables."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowledger.settings import Settings
from flowledger.stack import processes, state
from tests.integration.cli_stack import (
    ORDERS,
    Stack,
    Workload,
    own_stack,
)
from tests.waiting import wait_for
from topics import clients
from topics.catalogue import catalogue

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Stack]:
    with own_stack(tmp_path, "--kafka-brokers", "3") as handle:
        yield handle


def partitions(settings: Settings) -> list[Any]:
    """The partition metadata of the catalogue's topics under the test's prefix."""
    names = {spec.name for spec in catalogue(settings)}
    metadata = clients.admin(settings).list_topics(timeout=10)
    return [p for name in names for p in metadata.topics[name].partitions.values()]


def kafka_nodes(stack: Stack) -> list[dict[str, Any]]:
    recorded = state.load(stack.state_dir.resolve())
    assert recorded is not None
    return list(recorded.services["kafka"].details["nodes"])


def check_replicated(cluster: Stack) -> None:
    """Three nodes up; every catalogue topic has three in-sync replicas and needs two."""
    kafka = cluster.json("stack", "status")["services"]["kafka"]
    assert kafka["state"] == "up" and kafka["replication_factor"] == 3, kafka
    assert [n["state"] for n in kafka["nodes"]] == ["up", "up", "up"]
    assert len(kafka["endpoint"].split(",")) == 3
    described = cluster.cli("topics", "describe", "--json")
    assert described.returncode == 0, described.stderr
    reports = json.loads(described.stdout)
    assert reports and all(r["status"] == "exists" for r in reports), reports
    for report in reports:
        assert report["replication_factor"] == 3, report
        assert report["config"]["min.insync.replicas"] == "2", report
    for partition in partitions(cluster.settings):
        assert sorted(partition.replicas) == [1, 2, 3] and sorted(partition.isrs) == [1, 2, 3]


def test_the_broker_leading_most_partitions_dies_mid_workload(cluster: Stack) -> None:
    check_replicated(cluster)
    work = Workload.start(cluster)
    try:
        # The payments just sent are in flight when their likeliest leader dies.
        leads = Counter(p.leader for p in partitions(cluster.settings))
        victim_id, led = leads.most_common(1)[0]
        victim = next(n for n in kafka_nodes(cluster) if n["node_id"] == victim_id)
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: not processes.alive(victim["pid"]), 30, "the broker to die")
        at_kill = work.statuses()
        work.paying_until(
            lambda now: now["SUCCEEDED"] > at_kill["SUCCEEDED"],
            "runs to finish while one broker is down",
        )
        kafka = cluster.json("stack", "status")["services"]["kafka"]
        assert kafka["state"] == "degraded", kafka
        assert [n["state"] for n in kafka["nodes"]].count("down") == 1
        during = work.statuses()

        again = cluster.json("stack", "up")
        assert again["started"] == ["kafka"], again["started"]
        back = next(n for n in kafka_nodes(cluster) if n["node_id"] == victim_id)
        assert back["endpoint"] == victim["endpoint"] and back["pid"] != victim["pid"]
        assert again["services"]["kafka"]["state"] == "up"
        work.finish()
        assert at_kill["SUCCEEDED"] < ORDERS, "the broker was killed after the work was done"
        print(
            f"broker {victim_id} led {led} partitions; runs at the kill {dict(at_kill)}, "
            f"with two brokers {dict(during)}"
        )
        # The broker caught up with what was written without it.
        wait_for(
            lambda: all(sorted(p.isrs) == [1, 2, 3] for p in partitions(cluster.settings)),
            60,
            "the restarted broker to rejoin every partition's in-sync replicas",
        )
    finally:
        work.engine.dispose()
    verified = cluster.json("replay", "verify", "--shadow")
    assert verified["identical"] is True and verified["differences"] == []
