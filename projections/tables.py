"""The projection tables (SQLAlchemy Core). They are created by the Alembic migrations in
``projections/migrations``; a unit test checks that the migrations and this module agree.

Design rules:
- no foreign keys: the three topics are read concurrently, so a delivery may name a run
  whose first event has not been folded yet; rows must be writable in any order;
- every row carries the coordinates (``source_topic``, ``source_partition``,
  ``source_offset``) and ``source_event_id`` of the record that last changed it;
- timestamps are stored in UTC; JSON columns use the portable ``JSON`` type so the
  schema is identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

ID = 200  # run ids, wait ids, task ids, step paths: generous but bounded
NAME = 200
# flowledger:schedule:<tenant>:<definition_id>:<name>
SCHEDULE_ID = 3 * NAME + 32
KEY = 500  # correlation keys, Kafka keys


def _provenance() -> list[Column[object]]:
    return [
        Column("source_topic", String(NAME), nullable=False),
        Column("source_partition", Integer, nullable=False),
        Column("source_offset", BigInteger, nullable=False),
        Column("source_event_id", String(64)),
    ]


def _ts(name: str) -> Column[object]:
    return Column(name, DateTime(timezone=True))


workflow_definitions = Table(
    "workflow_definitions",
    metadata,
    Column("tenant", String(NAME), primary_key=True),
    Column("definition_id", String(NAME), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("hash", String(64), nullable=False),
    Column("name", Text),
    Column("description", Text),
    Column("trigger_event_type", String(NAME)),
    Column("definition", JSON, nullable=False),
    _ts("published_at"),
    *_provenance(),
    Index(None, "tenant", "trigger_event_type"),
)

workflow_runs = Table(
    "workflow_runs",
    metadata,
    Column("run_id", String(ID), primary_key=True),
    Column("tenant", String(NAME), nullable=False),
    Column("definition_id", String(NAME)),
    Column("version", Integer),
    Column("definition_hash", String(64)),
    Column("status", String(16), nullable=False),
    Column("current_step_path", Text),
    Column("input", JSON),
    Column("output", JSON),
    Column("error", JSON),
    Column("workflow_id", String(KEY)),
    Column("trigger_event_id", String(64)),
    Column("parent_run_id", String(ID)),
    Column("root_run_id", String(ID)),
    Column("parent_step_path", Text),
    _ts("started_at"),
    _ts("completed_at"),
    _ts("updated_at"),
    Column("last_seq", BigInteger, nullable=False),
    Column("continued_as_new_count", Integer, nullable=False),
    Column("semantics_version", Integer),
    Column("reset_execution_id", String(64)),
    Column("reset_through_seq", BigInteger, nullable=False, server_default="0"),
    *_provenance(),
    Index(None, "tenant", "status", "updated_at"),
    Index(None, "definition_id", "version"),
    Index(None, "parent_run_id"),
)

workflow_run_steps = Table(
    "workflow_run_steps",
    metadata,
    # One row per execution of a step: a step inside a loop runs many times at the
    # same path, so the execution is named by the seq of its StepStarted event.
    Column("run_id", String(ID), primary_key=True),
    Column("started_seq", BigInteger, primary_key=True),
    Column("tenant", String(NAME), nullable=False),
    Column("step_path", Text, nullable=False),
    Column("step_id", String(NAME)),
    Column("step_type", String(64)),
    Column("iteration", Integer),
    Column("status", String(16), nullable=False),
    Column("output", JSON),
    Column("error", JSON),
    _ts("started_at"),
    _ts("completed_at"),
    Column("completed_seq", BigInteger),
    *_provenance(),
    Index(None, "run_id", "status"),
)

workflow_run_waits = Table(
    "workflow_run_waits",
    metadata,
    Column("run_id", String(ID), primary_key=True),
    Column("wait_id", String(ID), primary_key=True),
    Column("tenant", String(NAME), nullable=False),
    Column("wait_type", String(16)),
    Column("step_path", Text),
    Column("event_type", String(NAME)),
    Column("correlation_key", String(KEY)),
    Column("filters", JSON),
    _ts("timeout_at"),
    Column("task_id", String(ID)),
    Column("status", String(16), nullable=False),
    _ts("created_at"),
    _ts("resolved_at"),
    Column("matched_event_id", String(64)),
    Column("created_seq", BigInteger),
    Column("resolved_seq", BigInteger),
    *_provenance(),
    Index(None, "tenant", "event_type", "correlation_key", "status"),
    Index(None, "status"),
)

workflow_runtime_events = Table(
    # The ingress audit: one row per ingested event (the name is the catalogue's).
    "workflow_runtime_events",
    metadata,
    # tenant:event_id when the record had an id (ids are unique only per tenant); an
    # invalid record without one is named by its ingress coordinates instead, so it
    # is still audited exactly once.
    Column("audit_id", String(KEY), primary_key=True),
    Column("event_id", String(64)),
    Column("event_type", String(NAME)),
    Column("event_name", String(NAME)),
    Column("tenant", String(NAME)),
    Column("occurred_at", String(64)),
    Column("workflow_correlation_key", String(KEY)),
    Column("payload", JSON),
    # A payload too large for the audit: its digest, size and first characters.
    Column("payload_sha256", String(64)),
    Column("payload_bytes", Integer),
    Column("payload_excerpt", Text),
    Column("user_id", String(NAME)),
    Column("source", String(NAME)),
    Column("payload_schema_ref", Text),
    Column("schema_version", Integer),
    Column("correlation_key", String(KEY)),
    Column("correlation_source", String(16)),
    Column("correlation_detail", Text),
    Column("error_code", String(64)),
    Column("error_message", Text),
    # matched | unmatched | expired | error, derived from error_code, the deliveries
    # and whether the event was held past its window
    Column("status", String(16), nullable=False),
    Column("delivery_count", Integer, nullable=False),
    Column("audit_count", Integer, nullable=False),
    _ts("received_at"),
    _ts("last_received_at"),
    Column("ingress_topic", String(NAME)),
    Column("ingress_partition", Integer),
    Column("ingress_offset", BigInteger),
    *_provenance(),
    Index(None, "tenant", "event_type", "correlation_key"),
    Index(None, "received_at"),
    Index(None, "status"),
)

workflow_event_deliveries = Table(
    "workflow_event_deliveries",
    metadata,
    Column("audit_id", String(KEY), primary_key=True),
    # kind:run_id:wait_id -- wait_id may be absent, and PostgreSQL keys refuse NULL.
    Column("delivery_key", String(KEY), primary_key=True),
    Column("event_id", String(64)),
    Column("tenant", String(NAME)),
    Column("run_id", String(ID), nullable=False),
    Column("wait_id", String(ID)),
    Column("kind", String(16), nullable=False),
    Column("outcome", String(64), nullable=False),
    _ts("received_at"),
    *_provenance(),
    Index(None, "run_id"),
)

workflow_action_invocations = Table(
    # A ledger: one row per ActionInvocation event (one per attempt).
    "workflow_action_invocations",
    metadata,
    Column("run_id", String(ID), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("tenant", String(NAME), nullable=False),
    Column("invocation_id", String(ID), nullable=False),
    Column("step_path", Text),
    Column("action", String(NAME)),
    Column("version", Integer),
    Column("attempt", Integer),
    Column("idempotency_key", String(KEY)),
    Column("input", JSON),
    Column("status", String(16)),
    Column("output", JSON),
    Column("error", JSON),
    # The idempotency ledger answered: the action did not run for this attempt.
    Column("cached", Boolean),
    _ts("occurred_at"),
    *_provenance(),
    Index(None, "invocation_id"),
    Index(None, "tenant", "action", "idempotency_key"),
)

workflow_human_tasks = Table(
    "workflow_human_tasks",
    metadata,
    Column("task_id", String(ID), primary_key=True),
    Column("run_id", String(ID), nullable=False),
    Column("tenant", String(NAME), nullable=False),
    Column("step_path", Text),
    Column("task_type", String(NAME)),
    Column("title", Text),
    Column("description", Text),
    Column("context", JSON),
    Column("form_schema", JSON),
    Column("status", String(16), nullable=False),
    Column("response", JSON),
    Column("completed_by", String(NAME)),
    _ts("created_at"),
    _ts("completed_at"),
    *_provenance(),
    Index(None, "tenant", "status"),
    Index(None, "run_id"),
)

workflow_run_logs = Table(
    "workflow_run_logs",
    metadata,
    Column("run_id", String(ID), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("tenant", String(NAME), nullable=False),
    Column("level", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("details", JSON),
    _ts("occurred_at"),
    *_provenance(),
)

workflow_operator_actions = Table(
    "workflow_operator_actions",
    metadata,
    # One row per run-control request an operator made, accepted or refused.
    Column("action_id", String(64), primary_key=True),
    Column("action", String(32), nullable=False),
    Column("tenant", String(NAME)),
    Column("run_id", String(ID)),
    Column("task_id", String(ID)),
    Column("requested_by", String(NAME), nullable=False),
    _ts("requested_at"),
    Column("reason", Text),
    Column("outcome", String(16), nullable=False),
    Column("code", String(64)),
    Column("message", Text),
    Column("details", JSON),
    *_provenance(),
    Index(None, "tenant", "requested_at"),
    Index(None, "run_id"),
)

workflow_schedules = Table(
    "workflow_schedules",
    metadata,
    # One row per Temporal Schedule of a definition, as its last schedule event saw it.
    Column("schedule_id", String(SCHEDULE_ID), primary_key=True),
    Column("tenant", String(NAME), nullable=False),
    Column("definition_id", String(NAME), nullable=False),
    Column("name", String(NAME), nullable=False),
    Column("version", Integer),
    # active, or deleted (its definition was retired or no longer names it)
    Column("state", String(16), nullable=False),
    Column("spec", JSON),
    Column("overlap", String(32)),
    Column("paused", Boolean, nullable=False),
    _ts("next_run_at"),
    _ts("last_run_at"),
    Column("last_event_type", String(32), nullable=False),
    Column("note", Text),
    _ts("updated_at"),
    *_provenance(),
    Index(None, "tenant", "definition_id"),
)

projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("projection", String(NAME), primary_key=True),
    Column("topic", String(NAME), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    _ts("updated_at"),
)

projection_errors = Table(
    "projection_errors",
    metadata,
    Column("projection", String(NAME), primary_key=True),
    Column("topic", String(NAME), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("record_key", Text),
    Column("code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("problems", JSON),
    # The start of the value, so an operator can see what was refused without Kafka.
    Column("value_excerpt", Text),
    _ts("recorded_at"),
)

TABLES: dict[str, Table] = {t.name: t for t in metadata.sorted_tables}
