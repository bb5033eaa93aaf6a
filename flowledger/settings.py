"""The one settings object. Built once (by the CLI, or by a test fixture) and passed
down; library code never reads the environment itself."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Defaults with more than one reader (workflow messages, the expression engine).
DEFAULT_TASK_QUEUE = "flowledger-runtime"
DEFAULT_STEP_BUDGET = 100_000
DEFAULT_MAX_OUTPUT_CHARS = 262_144


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "flowledger"
    # Lets tests (and side-by-side deployments) keep their topics apart.
    topic_prefix: str = ""
    events_partitions: int = Field(default=6, ge=1)
    # Partitions of the audit and runtime topics (keyed by event and run).
    partitions: int = Field(default=6, ge=1)
    # 1 for the local single broker; 3 on a real cluster.
    replication_factor: int = Field(default=1, ge=1)
    # `min.insync.replicas` of every catalogue topic (unset: the broker's default);
    # 2 with a replication factor of 3, so one broker may die and writes go on.
    min_insync_replicas: int | None = Field(default=None, ge=1)
    events_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)
    request_timeout_s: float = Field(default=30.0, gt=0)
    # `max.message.bytes` of every catalogue topic, set by `topics ensure`, and the
    # producers' own limit: one value, so whatever one topic takes the next one takes
    # too (an ingress record, its dead letter, its audit, the runtime events after it).
    max_message_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024)
    # Security, in librdkafka's own terms (topics/kafka_security.py maps them).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    # Mutual TLS: the client's certificate and key (PEM files).
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    # OAUTHBEARER with OIDC client credentials, fetched and refreshed by librdkafka.
    oauth_token_endpoint_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_scope: str | None = None
    # Any other librdkafka property (a JSON object); it wins over everything above.
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)


class TemporalSettings(_Section):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = DEFAULT_TASK_QUEUE
    # None: TLS when any of the TLS settings or an API key is given.
    tls: bool | None = None
    # PEM files, or the PEM text itself (*_data, as in Temporal's own configuration).
    tls_server_ca_cert: Path | None = None
    tls_server_ca_cert_data: str | None = None
    tls_client_cert: Path | None = None
    tls_client_cert_data: str | None = None
    tls_client_key: Path | None = None
    tls_client_key_data: SecretStr | None = None
    tls_server_name: str | None = None
    api_key: SecretStr | None = None
    grpc_meta: dict[str, str] = Field(default_factory=dict)
    # The cluster has flowledger's custom search attributes (the local stack registers
    # them, `flowledger temporal ensure` on any other): runs are started with them and
    # upsert their correlation keys. Off: neither, for a cluster without them, where
    # Temporal would refuse the start.
    search_attributes: bool = True


class ActionSettings(_Section):
    # Hosts core.http_request may call; anything else is HTTP_HOST_NOT_ALLOWED.
    http_allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost"])
    http_timeout_s: float = Field(default=10.0, gt=0)
    # How long an action run under an idempotency key holds the key without renewing
    # it (the worker renews it every couple of seconds while the action runs). A worker
    # that dies leaves the key to others only once this has passed.
    ledger_lease_s: float = Field(default=30.0, ge=5.0)


class WorkflowSettings(_Section):
    # Continue-as-new after this many executed steps (Temporal may ask sooner). Each
    # switch costs a new execution, its input (the whole definition) and an emission:
    # at 250 a run of pure steps spent most of its time switching (docs/decisions.md,
    # "Performance"); runs keep the value they started with.
    continue_as_new_steps: int = Field(default=1000, ge=10)
    # Continue-as-new after this many signals in one execution, also while a run sits
    # in one wait (Temporal refuses signals past 10,000 per execution by default).
    continue_as_new_signals: int = Field(default=2000, ge=10)
    delivered_ids_limit: int = Field(default=1000, ge=10)
    # Routed events a run keeps for a wait that may still take them (carried across
    # continue-as-new, so this times the event size bounds the carried state); past
    # it the oldest are dropped with a RunLog entry.
    buffered_events_limit: int = Field(default=1000, ge=1)
    max_definition_bytes: int = Field(default=512 * 1024, ge=1024)
    # Steps inside steps (then/else, body, try/catch), the top-level steps being level
    # 1. Past 60 a step's own fields could no longer fit the document's 128 JSON levels
    # (workflows/definitions/nesting.py); the default is measured in docs/decisions.md.
    max_definition_nesting: int = Field(default=32, ge=1, le=60)


class RecordSettings(_Section):
    """Limits on JSON that comes from outside (ingress envelopes, CLI and API input).
    A record past one is refused with its own code (RECORD_TOO_LARGE, RECORD_TOO_DEEP)
    and dead-lettered; nothing past them reaches a decoder that could fail on it."""

    # librdkafka's default producer limit: anything a default client can publish passes;
    # kept below kafka.max_message_bytes so the refused record's dead letter still fits.
    max_bytes: int = Field(default=1_000_000, ge=1024)
    # Nesting of objects and arrays, the envelope itself being level 1.
    max_depth: int = Field(default=64, ge=2, le=400)
    # An audit record keeps a payload up to this size; a larger one is kept as its
    # SHA-256, its size and an excerpt (the original stays on the ingress topic).
    audit_payload_max_bytes: int = Field(default=64 * 1024, ge=1024)


class DatabaseSettings(_Section):
    # Empty means "the SQLite file of the local stack". The password may be in it, but
    # is better kept apart (password or password_file), so the URL can be shown.
    url: str = ""
    password: SecretStr | None = None
    password_file: Path | None = None
    # libpq's TLS parameters: disable, allow, prefer, require, verify-ca, verify-full.
    sslmode: str | None = None
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None

    @model_validator(mode="after")
    def _read_password_file(self) -> DatabaseSettings:
        """The file is read once, when the settings are built, so one that cannot be
        read is a settings error at start-up rather than at the first connection."""
        if self.password is None and self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"password_file {self.password_file} cannot be read") from exc
            # A mounted Docker or Kubernetes secret ends with a newline.
            self.password = SecretStr(text.rstrip("\r\n"))
        return self


class StackSettings(_Section):
    state_dir: Path = Path(".flowledger")
    # Downloaded Kafka jars; shared between state directories so tests reuse them.
    cache_dir: Path | None = None
    ready_timeout_s: float = Field(default=120.0, gt=0)
    kafka_version: str = "4.1.1"
    kafka_heap: str = "512m"
    # Brokers of our own Kafka: 1, or a KRaft cluster on loopback (3 as users run it).
    kafka_brokers: int = Field(default=1, ge=1, le=9)
    # The brokers' group.initial.rebalance.delay.ms: 0 lets a new group start at once
    # (every test has its own); Kafka's default, 3000, lets instances started together
    # join one generation instead of the first taking every partition.
    kafka_initial_rebalance_delay_ms: int = Field(default=0, ge=0, le=300_000)
    # 0 picks a free loopback port at start.
    kafka_port: int = Field(default=0, ge=0, le=65535)
    temporal_port: int = Field(default=0, ge=0, le=65535)
    postgres_port: int = Field(default=0, ge=0, le=65535)
    java_bin: str = "java"
    mvn_bin: str = "mvn"
    temporal_bin: str | None = None
    postgres_bin_dir: Path | None = None

    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.state_dir / "cache").resolve()


class ProcessorSettings(_Section):
    group_id: str = "flowledger-processor"
    early_event_window_s: float = Field(default=600.0, ge=0)
    clock_skew_tolerance_s: float = Field(default=2.0, ge=0)
    # Ingress records taken per poll; their effects run concurrently, then one commit.
    batch_size: int = Field(default=500, ge=1)
    # Signals and starts in flight at once (per-workflow order is kept regardless).
    max_in_flight: int = Field(default=64, ge=1)
    # Batches whose effects may be in flight together: the next batches are taken
    # while a slow signal finishes; offsets still move only past fully done batches.
    max_batches_in_flight: int = Field(default=4, ge=1)
    poll_timeout_s: float = Field(default=0.05, gt=0)
    # Temporal or Kafka unavailable: retry from the first, doubling up to the last.
    retry_initial_backoff_s: float = Field(default=0.2, gt=0)
    retry_max_backoff_s: float = Field(default=5.0, gt=0)
    # How soon the group notices a dead instance and hands its partitions on.
    session_timeout_s: float = Field(default=45.0, ge=1)
    # The de-duplication horizon: an event is recognised as already processed for at
    # least this long after Kafka received it (its completion keys and the waits it
    # resolved are kept that long, then forgotten). Past it a redelivered copy is
    # processed again, which starts no second run (trigger workflow ids are fixed and
    # Temporal rejects a reused one) and wakes no run twice (signals carry event_id).
    dedup_horizon_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # How often the owner of ingress partition 0 writes a snapshot of the routing state
    # (with the runtime and audit offsets it covers): a restart reads the snapshot and
    # the tail after it, not the whole history. 0 writes one only at a clean stop.
    snapshot_interval_s: float = Field(default=30.0, ge=0)
    # "replicated": every instance folds and holds all of the routing state (waits,
    # held events, completion keys). "partitioned": ingress records are re-keyed by
    # routing key onto flowledger.internal.routing.v1 and each instance holds only the
    # state of the routing partitions it owns (docs/decisions.md, issue 19).
    routing: Literal["replicated", "partitioned"] = "replicated"

    @property
    def partitioned(self) -> bool:
        return self.routing == "partitioned"

    @property
    def routing_group_id(self) -> str:
        """The group of the loop that takes the routing topic when partitioned; the
        forwarder keeps `group_id` on the ingress topic."""
        return f"{self.group_id}.routing"

    @property
    def waits_group_id(self) -> str:
        """The group of the relay that re-keys the runtime topic's wait records onto
        the waits topic when partitioned (each instance relays a share of it)."""
        return f"{self.group_id}.waits"

    @property
    def dedup_horizon(self) -> timedelta:
        return timedelta(seconds=self.dedup_horizon_s)

    # Held early events are not capped: they are bounded by the ingress rate of
    # correlated events times early_event_window_s (capping would lose wake-ups).


class DeadLetterSettings(_Section):
    """`flowledger deadletters redrive`: the loop guard and the pace of a redrive."""

    # A dead letter whose record was sent back this many times is not sent again.
    max_redrives: int = Field(default=3, ge=1)
    # Records re-published per round (each round: progress marked, produced, marked).
    redrive_batch: int = Field(default=100, ge=1)
    # At most this many records per second reach the ingress topic (0: no limit), so a
    # large redrive does not crowd out live traffic.
    redrive_rate_per_s: float = Field(default=0.0, ge=0)


class ProjectorSettings(_Section):
    group_id: str = "flowledger-projector"
    # Records per transaction: bigger batches amortise the commit and bulk writes.
    batch_size: int = Field(default=10_000, ge=1)
    # Processes that fold a `replay rebuild` or `verify` (the runtime partitions are
    # shared among them); 0: one per CPU core.
    rebuild_processes: int = Field(default=0, ge=0)


class ReconcilerSettings(_Section):
    # How often Temporal's visibility is asked for runs it closed on its own.
    poll_interval_s: float = Field(default=2.0, gt=0)
    # How far back a (re)started reconciler looks for closed executions; what it
    # already published within this window is published again and changes nothing.
    lookback_s: float = Field(default=24 * 3600.0, gt=0)
    # How often an execution already recorded is looked at again, in case it was reset
    # after its terminate (one describe call each).
    recheck_interval_s: float = Field(default=60.0, gt=0)


class MetricsSettings(_Section):
    """Where a long-running service (processor, projector, worker, reconciler) serves
    /metrics, /healthz and /readyz. One process runs one service, so one port."""

    # False serves nothing (and /healthz with it).
    enabled: bool = True
    # 0.0.0.0 in a container, so that Prometheus and the healthcheck reach it.
    host: str = "127.0.0.1"
    # 0 picks a free port (logged at start).
    port: int = Field(default=0, ge=0, le=65535)
    # The worker's /metrics also carries the Temporal SDK's own metrics (temporal_*).
    temporal_sdk: bool = True


class ApiSettings(_Section):
    """`flowledger api`: where it listens and where its bearer tokens are kept (hashed)."""

    host: str = "127.0.0.1"
    # 0: a free port, picked at start (what `flowledger up` does).
    port: int = Field(default=8080, ge=0, le=65535)
    # Default: api-tokens.json under the stack's state directory.
    tokens_file: Path | None = None
    # The largest request body taken (an NDJSON batch of events, a definition).
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    page_size: int = Field(default=100, ge=1, le=10_000)
    # The tenants of the operator token `flowledger up` creates for development.
    development_tenants: list[str] = Field(default_factory=lambda: ["acme"])

    def resolved_tokens_file(self, state_dir: Path) -> Path:
        return self.tokens_file or state_dir / "api-tokens.json"


class ExpressionSettings(_Section):
    extra_functions: list[str] = Field(default_factory=list)
    step_budget: int = Field(default=DEFAULT_STEP_BUDGET, ge=1)
    max_output_chars: int = Field(default=DEFAULT_MAX_OUTPUT_CHARS, ge=1)


class CorrelationSettings(_Section):
    # Raw JSON object text (or already-parsed mapping); validated by the
    # correlation module when loaded so a bad value fails at start-up.
    paths: Any = None
    paths_file: Path | None = None


class TracingSettings(_Section):
    """OpenTelemetry traces, off unless an exporter is configured: an OTLP endpoint, or
    `enabled` for a process that installs its own tracer provider (a test, an embedding
    application)."""

    # The OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (/v1/traces is added).
    otlp_endpoint: str | None = None
    # Only OTLP over HTTP with protobuf bodies is built in (no gRPC stack to install).
    otlp_protocol: Literal["http/protobuf"] = "http/protobuf"
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    service_name: str = "flowledger"
    # None: on exactly when otlp_endpoint is set.
    enabled: bool | None = None

    @property
    def active(self) -> bool:
        return self.enabled if self.enabled is not None else bool(self.otlp_endpoint)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLOWLEDGER_",
        env_nested_delimiter="__",
        extra="forbid",
        # `FLOWLEDGER_TEMPORAL__TLS_CLIENT_CERT=` unsets, as a shell user means it
        # (an empty path would otherwise be the current directory).
        env_ignore_empty=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    projector: ProjectorSettings = Field(default_factory=ProjectorSettings)
    deadletters: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    reconciler: ReconcilerSettings = Field(default_factory=ReconcilerSettings)
    expressions: ExpressionSettings = Field(default_factory=ExpressionSettings)
    actions: ActionSettings = Field(default_factory=ActionSettings)
    workflows: WorkflowSettings = Field(default_factory=WorkflowSettings)
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)
    records: RecordSettings = Field(default_factory=RecordSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    # How the long-running commands log (flowledger/logs.py): text, or JSON lines with
    # run_id, event_id and trace_id where known.
    log_format: Literal["text", "json"] = "text"
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    def database_url(self) -> str:
        """The projection database to connect to: the configured URL with the TLS
        parameters and the password from its secret, else the stack's SQLite file.
        It may carry the password: show it only through redact_url()."""
        if self.database.url:
            return _with_database_security(self.database.url, self.database)
        return f"sqlite:///{(self.stack.state_dir / 'flowledger.db').resolve()}"

    def topic(self, base: str) -> str:
        """The physical name of a catalogue topic under this deployment's prefix."""
        return f"{self.kafka.topic_prefix}{base}"


def _with_database_security(url: str, database: DatabaseSettings) -> str:
    params = {
        name: str(value)
        for name in ("sslmode", "sslrootcert", "sslcert", "sslkey")
        if (value := getattr(database, name)) is not None
    }
    password = database.password.get_secret_value() if database.password else None
    if (not params and password is None) or not url.startswith("postgresql"):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{quote(password, safe='')}@{hostport}"
    query = "&".join(
        [*filter(None, [parts.query]), *(f"{k}={quote(v, safe='/')}" for k, v in params.items())]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_url(url: str) -> str:
    """A URL fit to print: its password, if any, replaced by ***."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
