"""Apache Kafka 4.x in KRaft mode: one combined broker/controller, jars from Maven
Central, started as `java -cp 'libs/*' kafka.Kafka`."""

from __future__ import annotations

import base64
import shutil
import tempfile
import uuid
from pathlib import Path

from confluent_kafka import KafkaException

from flowledger.codes import STACK_JAVA_MISSING, STACK_MAVEN_MISSING
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
    data: Path, port: int, controller_port: int, secure: SaslSslListener | None = None
) -> str:
    client = secure.listener(port) if secure else f"PLAINTEXT://127.0.0.1:{port}"
    name = client.split(":", 1)[0]
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
            f"listeners={client},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners={client}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={name}:{name},CONTROLLER:PLAINTEXT",
            f"inter.broker.listener.name={name}",
            *(secure.properties() if secure else []),
            f"log.dirs={data}",
            "num.partitions=1",
            "default.replication.factor=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=6",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
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


def start(
    stack: StackSettings,
    state_dir: Path,
    previous: ServiceState | None = None,
    secure: SaslSslListener | None = None,
) -> ServiceState:
    """Start the broker; with `previous` (its last record in stack.json) on the same
    ports, so clients that know the old address reconnect by themselves and the
    controller finds the quorum its data was formatted with. With `secure`, its one
    client listener is SASL_SSL instead of PLAINTEXT."""
    if shutil.which(stack.java_bin) is None:
        raise StackError(
            f"Java ({stack.java_bin}) is not installed; Kafka needs Java 17+",
            code=STACK_JAVA_MISSING,
        )
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
    libs = ensure_jars(stack)
    home = state_dir / "kafka"
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    config.write_text(_properties(data, port, controller_port, secure), encoding="utf-8")
    config.chmod(0o600)  # it may hold the broker's own SCRAM password
    log4j = home / "log4j2.properties"
    log_file = home / "kafka.log"
    log4j.write_text(_log4j(log_file), encoding="utf-8")
    classpath = f"{libs}/*"
    java = [
        stack.java_bin,
        f"-Xmx{stack.kafka_heap}",
        f"-Xms{stack.kafka_heap}",
        "-XX:+UseG1GC",
        "-XX:TieredStopAtLevel=1",
        "-Xshare:auto",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
    ]
    # The data directory is formatted once; a restart keeps its topics.
    if not (data / "meta.properties").exists():
        shutil.rmtree(data, ignore_errors=True)
        processes.run_checked(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "--cluster-id",
                _cluster_id(),
                "--config",
                str(config),
                *(secure.format_args() if secure else []),
            ],
            "formatting Kafka storage",
            timeout=120,
        )
    stdout_log = home / "kafka.out"
    proc = processes.spawn([*java, "kafka.Kafka", str(config)], stdout_log, cwd=home)
    return ServiceState(
        name="kafka",
        endpoint=f"127.0.0.1:{port}",
        pid=proc.pid,
        log=str(log_file),
        data_dir=str(data),
        details={
            "version": stack.kafka_version,
            "controller": f"127.0.0.1:{controller_port}",
            "stdout": str(stdout_log),
        },
    )


def probe(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether our own (plaintext) broker answers; attached ones are probed with the
    security settings (flowledger.stack.attached)."""
    # Constructed, not validated: no FLOWLEDGER_* of the environment takes part.
    own = Settings.model_construct(kafka=KafkaSettings(bootstrap_servers=endpoint))
    try:
        # log_level 0: refused connections while the broker boots are expected.
        admin = clients.admin(own, **{"socket.connection.setup.timeout.ms": 1000, "log_level": 0})
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)
