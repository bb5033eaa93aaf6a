"""Apache Kafka 4.x in KRaft mode, jars from Maven Central, started as `java -cp
'libs/*' kafka.Kafka`: one combined broker/controller, or a cluster of them on
loopback (each node a broker and a static controller voter), as users run it."""

from __future__ import annotations

import base64
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from flowledger.codes import (
    STACK_JAVA_MISSING,
    STACK_KAFKA_CLUSTER_SECURED,
    STACK_MAVEN_MISSING,
)
from flowledger.errors import StackError
from flowledger.settings import KafkaSettings, Settings, StackSettings
from flowledger.stack import processes
from flowledger.stack.kafka_secure import SaslSslListener
from flowledger.stack.state import ServiceState
from topics import clients

POM = Path(__file__).resolve().parent / "kafka-pom.xml"


def libs_dir(stack: StackSettings) -> Path:
    return stack.resolved_cache_dir() / f"kafka-{stack.kafka_version}" / "libs"


def ensure_jars(stack: StackSettings) -> Path:
    """Resolve the broker's jars once; later calls reuse the cache."""
    target = libs_dir(stack)
    if target.is_dir() and any(target.glob("kafka_2.13-*.jar")):
        return target
    if shutil.which(stack.mvn_bin) is None:
        raise StackError(
            f"Maven ({stack.mvn_bin}) is not installed; it is needed once to fetch the Kafka jars",
            code=STACK_MAVEN_MISSING,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Resolve into a scratch folder and rename, so an interrupted download never
    # looks like a complete cache.
    scratch = Path(tempfile.mkdtemp(prefix="libs-", dir=target.parent))
    try:
        processes.run_checked(
            [
                stack.mvn_bin,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={scratch}",
                f"-Dkafka.version={stack.kafka_version}",
            ],
            f"resolving Apache Kafka {stack.kafka_version} from Maven Central",
        )
        if target.exists():
            shutil.rmtree(scratch)
        else:
            scratch.rename(target)
    finally:
        if scratch.exists() and scratch != target:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _cluster_id() -> str:
    # KRaft wants a base64url-encoded UUID without padding.
    # One starting with "-" would be read as an option by the storage tool.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def _properties(
    data: Path,
    port: int,
    controller_port: int,
    secure: SaslSslListener | None = None,
    cluster: Cluster | None = None,
    rebalance_delay_ms: int = 0,
) -> str:
    """One node's server.properties. Alone it bootstraps its own single-voter quorum;
    in a cluster every node is a broker and one of its static controller voters, and
    the internal topics get the cluster's replication."""
    client = secure.listener(port) if secure else f"PLAINTEXT://127.0.0.1:{port}"
    name = client.split(":", 1)[0]
    if cluster is None:
        node, quorum, replicas, min_isr = (
            1,
            [f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}"],
            1,
            1,
        )
    else:
        node, quorum = cluster.node_id, [f"controller.quorum.voters={cluster.voters}"]
        replicas, min_isr = cluster.replicas, cluster.min_insync
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node}",
            *quorum,
            f"listeners={client},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners={client}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={name}:{name},CONTROLLER:PLAINTEXT",
            f"inter.broker.listener.name={name}",
            *(secure.properties() if secure else []),
            f"log.dirs={data}",
            "num.partitions=1",
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=6",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            "transaction.state.log.num.partitions=6",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            f"group.initial.rebalance.delay.ms={rebalance_delay_ms}",
            "auto.create.topics.enable=false",
            "log.flush.interval.messages=9223372036854775807",
            "",
        ]
    )


def _log4j(log_file: Path) -> str:
    return "\n".join(
        [
            "rootLogger.level=INFO",
            "rootLogger.appenderRef.file.ref=FILE",
            "appender.file.type=File",
            "appender.file.name=FILE",
            f"appender.file.fileName={log_file}",
            "appender.file.layout.type=PatternLayout",
            "appender.file.layout.pattern=[%d] %p %m (%c)%n",
            "logger.kafka.name=kafka",
            "logger.kafka.level=INFO",
            "logger.state.name=state.change.logger",
            "logger.state.level=WARN",
            "",
        ]
    )


@dataclass(frozen=True)
class Cluster:
    """Where one node stands in a cluster of our own."""

    node_id: int
    voters: str  # controller.quorum.voters: "1@host:port,2@host:port,..."
    replicas: int
    min_insync: int


def replication(nodes: int) -> tuple[int, int]:
    """The replication factor and min.insync.replicas for a cluster of `nodes`
    brokers: three copies where there are three, and a write acknowledged by all but
    one of them, so one broker may die without refusing writes or losing any."""
    replicas = min(3, nodes)
    return replicas, max(1, replicas - 1)


def nodes(service: ServiceState) -> list[dict[str, Any]]:
    """The nodes of a recorded Kafka service; a single broker is a cluster of one."""
    recorded = service.details.get("nodes")
    if isinstance(recorded, list) and recorded:
        return [dict(n) for n in recorded]
    return [
        {
            "node_id": 1,
            "endpoint": service.endpoint,
            "controller": service.details.get("controller", ""),
            "pid": service.pid,
            "log": service.log,
        }
    ]


def _java(stack: StackSettings, log4j: Path) -> list[str]:
    return [
        stack.java_bin,
        f"-Xmx{stack.kafka_heap}",
        f"-Xms{stack.kafka_heap}",
        "-XX:+UseG1GC",
        "-XX:TieredStopAtLevel=1",
        "-Xshare:auto",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{ensure_jars(stack)}/*",
    ]


def _check_java(stack: StackSettings) -> None:
    if shutil.which(stack.java_bin) is None:
        raise StackError(
            f"Java ({stack.java_bin}) is not installed; Kafka needs Java 17+",
            code=STACK_JAVA_MISSING,
        )


@dataclass(frozen=True)
class _Node:
    home: Path
    port: int
    controller_port: int

    @property
    def data(self) -> Path:
        return self.home / "data"


def _launch_node(
    stack: StackSettings,
    node: _Node,
    cluster_id: str | None,
    secure: SaslSslListener | None = None,
    cluster: Cluster | None = None,
) -> tuple[int, Path, Path]:
    """Write the node's configuration, format its storage the first time, start it;
    its pid, its log and its stdout."""
    node.home.mkdir(parents=True, exist_ok=True)
    config = node.home / "server.properties"
    config.write_text(
        _properties(
            node.data,
            node.port,
            node.controller_port,
            secure,
            cluster,
            stack.kafka_initial_rebalance_delay_ms,
        ),
        encoding="utf-8",
    )
    config.chmod(0o600)  # it may hold the broker's own SCRAM password
    log4j = node.home / "log4j2.properties"
    log_file = node.home / "kafka.log"
    log4j.write_text(_log4j(log_file), encoding="utf-8")
    java = _java(stack, log4j)
    # The data directory is formatted once; a restart keeps its topics.
    if not (node.data / "meta.properties").exists():
        shutil.rmtree(node.data, ignore_errors=True)
        processes.run_checked(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                # A cluster's voters are static: each node is formatted alike, with
                # the cluster's id; a lone node bootstraps a quorum of itself.
                *([] if cluster else ["--standalone"]),
                "--cluster-id",
                cluster_id or _cluster_id(),
                "--config",
                str(config),
                *(secure.format_args() if secure else []),
            ],
            "formatting Kafka storage",
            timeout=120,
        )
    stdout_log = node.home / "kafka.out"
    proc = processes.spawn([*java, "kafka.Kafka", str(config)], stdout_log, cwd=node.home)
    return proc.pid, log_file, stdout_log


def start(
    stack: StackSettings,
    state_dir: Path,
    previous: ServiceState | None = None,
    secure: SaslSslListener | None = None,
) -> ServiceState:
    """Start the broker (or, with `stack.kafka_brokers` above one, a cluster); with
    `previous` (its last record in stack.json) on the same ports, so clients that know
    the old address reconnect by themselves and the controller finds the quorum its
    data was formatted with. With `secure`, its one client listener is SASL_SSL
    instead of PLAINTEXT."""
    _check_java(stack)
    count = len(nodes(previous)) if previous is not None else stack.kafka_brokers
    if count > 1:
        if secure is not None:
            raise StackError(
                "a secured Kafka of our own is one broker; attach to a secured cluster instead",
                code=STACK_KAFKA_CLUSTER_SECURED,
            )
        return _start_cluster(stack, state_dir, count, previous)
    if previous is not None:
        port = processes.claim_port("kafka", previous.port())
        controller = str(previous.details.get("controller", ""))
        controller_port = (
            processes.claim_port("kafka controller", int(controller.rsplit(":", 1)[1]))
            if ":" in controller
            else processes.free_port(avoid={port})
        )
    else:
        port = processes.claim_port("kafka", stack.kafka_port)
        controller_port = processes.free_port(avoid={port})
    node = _Node(state_dir / "kafka", port, controller_port)
    pid, log_file, stdout_log = _launch_node(stack, node, None, secure)
    return ServiceState(
        name="kafka",
        endpoint=f"127.0.0.1:{port}",
        pid=pid,
        log=str(log_file),
        data_dir=str(node.data),
        details={
            "version": stack.kafka_version,
            "controller": f"127.0.0.1:{controller_port}",
            "stdout": str(stdout_log),
        },
    )


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _start_cluster(
    stack: StackSettings, state_dir: Path, count: int, previous: ServiceState | None
) -> ServiceState:
    """Every node that is not running, on its recorded ports with its data; a node
    still running is left as it is (the others rejoin it)."""
    if previous is not None:
        recorded = nodes(previous)
        cluster_id = str(previous.details["cluster_id"])
        ports = [(_port(n["endpoint"]), _port(n["controller"])) for n in recorded]
    else:
        recorded = []
        cluster_id = _cluster_id()
        first = processes.claim_port("kafka", stack.kafka_port)
        taken = {first}
        ports = []
        for index in range(count):
            port = first if index == 0 else processes.free_port(avoid=taken)
            taken.add(port)
            controller_port = processes.free_port(avoid=taken)
            taken.add(controller_port)
            ports.append((port, controller_port))
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_p, c) in enumerate(ports))
    replicas, min_insync = replication(count)
    launched: list[int] = []
    out: list[dict[str, Any]] = []
    try:
        for index, (port, controller_port) in enumerate(ports):
            if index < len(recorded) and processes.alive(recorded[index].get("pid")):
                out.append(recorded[index])
                continue
            node = _Node(
                state_dir / "kafka" / f"node-{index + 1}",
                processes.claim_port("kafka", port) if previous else port,
                processes.claim_port("kafka controller", controller_port)
                if previous
                else controller_port,
            )
            cluster = Cluster(index + 1, voters, replicas, min_insync)
            pid, log_file, stdout_log = _launch_node(stack, node, cluster_id, cluster=cluster)
            launched.append(pid)
            out.append(
                {
                    "node_id": index + 1,
                    "endpoint": f"127.0.0.1:{port}",
                    "controller": f"127.0.0.1:{controller_port}",
                    "pid": pid,
                    "log": str(log_file),
                    "data_dir": str(node.data),
                    "stdout": str(stdout_log),
                }
            )
    except BaseException:
        for pid in launched:
            processes.stop(pid)
        raise
    return ServiceState(
        name="kafka",
        endpoint=",".join(n["endpoint"] for n in out),
        pid=out[0]["pid"],
        log=out[0]["log"],
        data_dir=str(state_dir / "kafka"),
        details={
            "version": stack.kafka_version,
            "cluster_id": cluster_id,
            "replication_factor": replicas,
            "min_insync_replicas": min_insync,
            "nodes": out,
        },
    )


def probe(endpoint: str, timeout: float = 2.0, brokers: int = 1) -> bool:
    """Whether our own (plaintext) broker answers, with `brokers` of the cluster
    registered; attached ones are probed with the security settings
    (flowledger.stack.attached)."""
    # Constructed, not validated: no FLOWLEDGER_* of the environment takes part.
    own = Settings.model_construct(kafka=KafkaSettings(bootstrap_servers=endpoint))
    try:
        # log_level 0: refused connections while the broker boots are expected.
        admin = clients.admin(own, **{"socket.connection.setup.timeout.ms": 1000, "log_level": 0})
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return len(metadata.brokers) >= brokers
