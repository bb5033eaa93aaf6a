"""Error codes of the Temporal side: definitions, runs, steps, actions, human tasks and
run control. (Expression codes are the expression contract's: workflows/expressions.)

Stable strings that scripts may match on; docs/errors.md lists them all and is kept
in sync by a test. A comment starting `#:` says what each one means."""

from __future__ import annotations

from typing import Final

#: Temporal did not answer.
TEMPORAL_UNAVAILABLE: Final = "TEMPORAL_UNAVAILABLE"
#: Temporal refused the client's TLS connection, certificate or API key.
TEMPORAL_AUTH_FAILED: Final = "TEMPORAL_AUTH_FAILED"
#: Temporal's own client configuration (TEMPORAL_*, temporal.toml) cannot be used.
TEMPORAL_CONFIG_INVALID: Final = "TEMPORAL_CONFIG_INVALID"
#: A run-control request is malformed (a reason of 3+ characters is required).
INVALID_REQUEST: Final = "INVALID_REQUEST"
#: The definition has problems; each is listed with its path and code.
DEFINITION_INVALID: Final = "DEFINITION_INVALID"
#: The definition is larger than `workflows.max_definition_bytes`.
DEFINITION_TOO_LARGE: Final = "DEFINITION_TOO_LARGE"
#: Steps nest past `workflows.max_definition_nesting`, or the JSON past 128 levels.
DEFINITION_TOO_DEEP: Final = "DEFINITION_TOO_DEEP"
#: A required field is missing.
DEFINITION_FIELD_MISSING: Final = "DEFINITION_FIELD_MISSING"
#: A field has the wrong type or value.
DEFINITION_FIELD_INVALID: Final = "DEFINITION_FIELD_INVALID"
#: A field the step type does not have.
DEFINITION_UNKNOWN_FIELD: Final = "DEFINITION_UNKNOWN_FIELD"
#: A step type that is not registered.
DEFINITION_UNKNOWN_STEP_TYPE: Final = "DEFINITION_UNKNOWN_STEP_TYPE"
#: Two steps share an id.
DEFINITION_DUPLICATE_STEP_ID: Final = "DEFINITION_DUPLICATE_STEP_ID"
#: A retry policy where the step type takes none.
DEFINITION_RETRY_NOT_ALLOWED: Final = "DEFINITION_RETRY_NOT_ALLOWED"
#: `on_error` where the step type takes none.
DEFINITION_ON_ERROR_NOT_ALLOWED: Final = "DEFINITION_ON_ERROR_NOT_ALLOWED"
#: `control.forEach` runs sequentially only.
DEFINITION_FOREACH_CONCURRENCY: Final = "DEFINITION_FOREACH_CONCURRENCY"
#: An event wait without its event type or correlation key.
DEFINITION_WAIT_INCOMPLETE: Final = "DEFINITION_WAIT_INCOMPLETE"
#: A time wait needs exactly one of duration_ms and until.
DEFINITION_TIME_WAIT_INVALID: Final = "DEFINITION_TIME_WAIT_INVALID"
#: An event-wait filter is malformed.
DEFINITION_FILTER_INVALID: Final = "DEFINITION_FILTER_INVALID"
#: An action (or version) that is not registered.
DEFINITION_ACTION_UNKNOWN: Final = "DEFINITION_ACTION_UNKNOWN"
#: An action's input does not fit the action's input model.
DEFINITION_ACTION_INPUT_INVALID: Final = "DEFINITION_ACTION_INPUT_INVALID"
#: An assignment target outside vars., payload. or local.
DEFINITION_ASSIGN_TARGET_INVALID: Final = "DEFINITION_ASSIGN_TARGET_INVALID"
#: A payload or form schema is not a valid JSON Schema.
DEFINITION_SCHEMA_INVALID: Final = "DEFINITION_SCHEMA_INVALID"
#: A schedule trigger's cron expression does not parse.
DEFINITION_SCHEDULE_CRON_INVALID: Final = "DEFINITION_SCHEDULE_CRON_INVALID"
#: A schedule trigger names a timezone the IANA database does not know.
DEFINITION_SCHEDULE_TIMEZONE_UNKNOWN: Final = "DEFINITION_SCHEDULE_TIMEZONE_UNKNOWN"
#: A one-time schedule's `at` is not in the future.
DEFINITION_SCHEDULE_AT_PAST: Final = "DEFINITION_SCHEDULE_AT_PAST"
#: A schedule trigger has none, or more than one, of cron, interval_ms and at.
DEFINITION_SCHEDULE_SPEC: Final = "DEFINITION_SCHEDULE_SPEC"
#: Two schedule triggers of one definition share a name.
DEFINITION_SCHEDULE_DUPLICATE_NAME: Final = "DEFINITION_SCHEDULE_DUPLICATE_NAME"
#: No such schedule in Temporal.
SCHEDULE_NOT_FOUND: Final = "SCHEDULE_NOT_FOUND"
#: Temporal refused a schedule operation (create, update, pause, trigger, backfill...).
SCHEDULE_OPERATION_FAILED: Final = "SCHEDULE_OPERATION_FAILED"
#: No such published definition (or version).
DEFINITION_NOT_FOUND: Final = "DEFINITION_NOT_FOUND"
#: That version is already published with other content.
DEFINITION_VERSION_EXISTS: Final = "DEFINITION_VERSION_EXISTS"
#: The definitions topic could not be read.
DEFINITIONS_READ_FAILED: Final = "DEFINITIONS_READ_FAILED"
#: A run's pinned definition no longer parses (InterpreterCorruption).
DEFINITION_UNREADABLE: Final = "DEFINITION_UNREADABLE"
#: No such run.
RUN_NOT_FOUND: Final = "RUN_NOT_FOUND"
#: `runs wait` timed out before the run reached the status.
RUN_WAIT_TIMEOUT: Final = "RUN_WAIT_TIMEOUT"
#: The run input breaks the definition's payload schema.
RUN_INPUT_INVALID: Final = "RUN_INPUT_INVALID"
#: The run input is too large.
RUN_INPUT_TOO_LARGE: Final = "RUN_INPUT_TOO_LARGE"
#: A run-control request failed.
RUN_CONTROL_FAILED: Final = "RUN_CONTROL_FAILED"
#: The run was canceled (Cancellation, never catchable).
RUN_CANCELED: Final = "RUN_CANCELED"
#: resume, retry and requeue are refused: Temporal decides (409).
WORKFLOW_TEMPORAL_ACTION_UNSUPPORTED: Final = "WORKFLOW_TEMPORAL_ACTION_UNSUPPORTED"
#: Temporal refused the cancel; nothing changed (409).
WORKFLOW_TEMPORAL_CANCEL_FAILED: Final = "WORKFLOW_TEMPORAL_CANCEL_FAILED"
#: Temporal refused the terminate (unreachable, or the run already closed); nothing changed.
WORKFLOW_TEMPORAL_TERMINATE_FAILED: Final = "WORKFLOW_TEMPORAL_TERMINATE_FAILED"
#: Temporal refused the signal; nothing changed.
WORKFLOW_TEMPORAL_SIGNAL_FAILED: Final = "WORKFLOW_TEMPORAL_SIGNAL_FAILED"
#: Workflow code built a runtime event that breaks its schema.
RUNTIME_EVENT_INVALID: Final = "RUNTIME_EVENT_INVALID"
#: A step type with no handler reached the interpreter.
STEP_TYPE_UNKNOWN: Final = "STEP_TYPE_UNKNOWN"
#: A control.if condition did not give a boolean.
CONDITION_NOT_BOOLEAN: Final = "CONDITION_NOT_BOOLEAN"
#: A control.forEach items expression did not give an array.
ITEMS_NOT_ARRAY: Final = "ITEMS_NOT_ARRAY"
#: An assignment target cannot be written.
ASSIGN_TARGET_INVALID: Final = "ASSIGN_TARGET_INVALID"
#: An event wait's correlation key evaluated to null or a non-string.
WAIT_CORRELATION_KEY_INVALID: Final = "WAIT_CORRELATION_KEY_INVALID"
#: A wait timed out (TimeoutError).
WAIT_TIMED_OUT: Final = "WAIT_TIMED_OUT"
#: A time wait's until is not an ISO time.
WAIT_UNTIL_INVALID: Final = "WAIT_UNTIL_INVALID"
#: A time wait's duration is not a non-negative number.
WAIT_DURATION_INVALID: Final = "WAIT_DURATION_INVALID"
#: A retry loop ended without an outcome (InterpreterCorruption).
RETRY_LOOP_EXHAUSTED: Final = "RETRY_LOOP_EXHAUSTED"
#: A child run's input breaks its definition's payload schema.
CHILD_INPUT_INVALID: Final = "CHILD_INPUT_INVALID"
#: A child run failed (ChildWorkflowError).
CHILD_FAILED: Final = "CHILD_FAILED"
#: An action ran and failed (ActionError).
ACTION_FAILED: Final = "ACTION_FAILED"
#: An action raised something unexpected.
ACTION_CRASHED: Final = "ACTION_CRASHED"
#: An action's input does not fit its input model at run time.
ACTION_INPUT_INVALID: Final = "ACTION_INPUT_INVALID"
#: An action that is not registered, at run time.
ACTION_UNKNOWN: Final = "ACTION_UNKNOWN"
#: Another attempt holds the action's idempotency key (transient: retried once its lease expires).
ACTION_KEY_BUSY: Final = "ACTION_KEY_BUSY"
#: The idempotency ledger's database could not be reached (transient).
ACTION_LEDGER_UNAVAILABLE: Final = "ACTION_LEDGER_UNAVAILABLE"
#: An action's idempotency_key gave null, an empty string, an object or an array.
ACTION_IDEMPOTENCY_KEY_INVALID: Final = "ACTION_IDEMPOTENCY_KEY_INVALID"
#: An activity timed out.
ACTIVITY_TIMEOUT: Final = "ACTIVITY_TIMEOUT"
#: core.emit_event could not publish its event.
EMIT_FAILED: Final = "EMIT_FAILED"
#: core.http_request to a host outside actions.http_allowed_hosts.
HTTP_HOST_NOT_ALLOWED: Final = "HTTP_HOST_NOT_ALLOWED"
#: core.http_request failed to connect or send.
HTTP_REQUEST_FAILED: Final = "HTTP_REQUEST_FAILED"
#: core.http_request got a 5xx answer.
HTTP_SERVER_ERROR: Final = "HTTP_SERVER_ERROR"
#: core.http_request timed out.
HTTP_TIMEOUT: Final = "HTTP_TIMEOUT"
#: No such human task.
HUMAN_TASK_NOT_FOUND: Final = "HUMAN_TASK_NOT_FOUND"
#: The human task is already completed or canceled.
HUMAN_TASK_NOT_OPEN: Final = "HUMAN_TASK_NOT_OPEN"
#: The response breaks the task's form schema (ValidationError).
HUMAN_TASK_RESPONSE_INVALID: Final = "HUMAN_TASK_RESPONSE_INVALID"
