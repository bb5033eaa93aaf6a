"""Steps with effects outside the workflow: action.call, event.wait, time.wait,
human.task and control.callWorkflow. Each reaches the world only through the host."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import jsonschema

from schemas.runtime import (
    ActionInvocationData,
    HumanTaskCompletedData,
    HumanTaskCreatedData,
    RunLogData,
    WaitCreatedData,
)
from workflows import filters as wait_filters
from workflows.codes import (
    ACTION_IDEMPOTENCY_KEY_INVALID,
    CHILD_INPUT_INVALID,
    HUMAN_TASK_RESPONSE_INVALID,
    RETRY_LOOP_EXHAUSTED,
    WAIT_CORRELATION_KEY_INVALID,
    WAIT_DURATION_INVALID,
    WAIT_TIMED_OUT,
    WAIT_UNTIL_INVALID,
)
from workflows.definitions.model import (
    ActionCallStep,
    CallWorkflowStep,
    EventWaitStep,
    HumanTaskStep,
    RetryPolicy,
    TimeWaitStep,
)
from workflows.errors import NEVER_CAUGHT, StepError
from workflows.messages import (
    ActionRequest,
    DefinitionRequest,
    DeliveredEvent,
    RunInput,
    RunResult,
    run_workflow_id,
)
from workflows.run_state import ContinueAsNewRequested, Outcome, Resume, RunState
from workflows.wait_rule import may_take, received_time

Local = dict[str, Any]

# Temporal patch ids of changes of behaviour (see Host.patched).
REFUSED_RESPONSE_FAILS = "flowledger.human-task.refused-response-fails"
UNUSABLE_KEY_FAILS = "flowledger.action.unusable-idempotency-key-fails"
EMIT_BESIDE_ACTION = "flowledger.action.emit-beside-action"
# Dropped buffered events logged at most this many to an entry while a run waits.
DROPS_PER_LOG = 100

TASK_NAMESPACE = uuid.UUID("5d0b9f7e-3c2a-5e41-8f6d-2b1a0c9e8d7f")
CHILD_NAMESPACE = uuid.UUID("8a4e2c6b-1f3d-5b7a-9c0e-4d6f8a2b1c3e")


def wait_id(run_id: str, path: str, iteration: str) -> str:
    return f"{run_id}:{path}" + (f"#{iteration}" if iteration else "")


def key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key).strip()


class Retry:
    """An authored retry policy as parsed, defaults included (they live on the model):
    attempt 1 is the first; backoff on the workflow clock. No policy: one attempt."""

    def __init__(self, policy: RetryPolicy | None) -> None:
        self.attempts = policy.max_attempts if policy else 1
        self.delay_ms = float(policy.backoff_ms) if policy else 0.0
        self.multiplier = policy.backoff_multiplier if policy else 1.0
        self.max_delay_ms = policy.max_delay_ms if policy else None
        self.on: tuple[str, ...] = tuple(policy.retry_on) if policy else ()

    def delay_s(self) -> float:
        cap = self.max_delay_ms
        return (self.delay_ms if cap is None else min(self.delay_ms, cap)) / 1000.0

    def again(self, attempt: int, failure: StepError) -> bool:
        return (
            attempt < self.attempts
            and failure.category in self.on
            and failure.category not in NEVER_CAUGHT
            and failure.retryable
        )

    async def pause(self, it: RunState) -> None:
        await it.flush()
        await it.host.sleep(self.delay_s())
        self.delay_ms *= self.multiplier


async def action(
    it: RunState,
    step: ActionCallStep,
    path: str,
    iteration: str,
    local: Local,
    resume: Resume | None,
) -> Outcome:
    name, version = step.action, step.version
    data = it.evaluate(step.input, path, "input", local)
    default_key = f"{it.run.run_id}:{path}:{iteration}:{name}:{version}"
    authored = step.idempotency_key is not None
    key = (
        it.evaluate(step.idempotency_key, path, "idempotency_key", local)
        if authored
        else default_key
    )
    unusable = key is None or isinstance(key, dict | list) or key_text(key) == ""
    # A ledger key names one effect across runs: a missing or structured value would
    # make unrelated calls share it. (Asked of Temporal only for such a key, so that
    # an execution that ran on with one before the check replays as it ran.)
    if authored and unusable and it.host.patched(UNUSABLE_KEY_FAILS):
        raise StepError(
            "ValidationError",
            ACTION_IDEMPOTENCY_KEY_INVALID,
            f"idempotency_key gave {key!r}; a ledger key is a non-empty string or number",
            path,
        )
    retry = Retry(step.retry)
    # The events before an attempt go out while it runs (they land before any event
    # after it); an execution recorded before the patch waited for them first.
    beside = it.host.patched(EMIT_BESIDE_ACTION)
    for attempt in range(1, retry.attempts + 1):
        await (it.flush_beside() if beside else it.flush())
        record = {
            "invocation_id": f"{key}#{attempt}",
            "step_path": path,
            "action": name,
            "version": version,
            "attempt": attempt,
            "idempotency_key": key_text(key) if authored else str(key),
            "input": data,
        }
        try:
            result = await it.host.call_action(
                ActionRequest(
                    run_id=it.run.run_id,
                    tenant=it.run.tenant,
                    step_path=path,
                    iteration=iteration,
                    action=name,
                    version=version,
                    input=data,
                    idempotency_key=key_text(key) if authored else str(key),
                    attempt=attempt,
                    ledger=authored,
                )
            )
        except StepError as failure:
            failure.step_path = failure.step_path or path
            it.event(ActionInvocationData(**record, status="FAILED", error=failure.as_dict()))
            if retry.again(attempt, failure):
                await retry.pause(it)
                continue
            if step.on_error == "continue" and failure.catchable:
                return Outcome(status="FAILED", error=failure)
            raise
        output = result.get("output", {})
        it.event(
            ActionInvocationData(
                **record, status="SUCCEEDED", output=output, cached=bool(result.get("cached"))
            )
        )
        if result.get("run_log"):
            it.event(RunLogData.model_validate(result["run_log"]))
        if step.save_as:
            it.data.assign(step.save_as, output, local, path)
        return Outcome(output=output)
    raise StepError(
        "InterpreterCorruption", RETRY_LOOP_EXHAUSTED, "retry loop ended without an outcome", path
    )


async def event_wait(
    it: RunState,
    step: EventWaitStep,
    path: str,
    iteration: str,
    local: Local,
    resume: Resume | None,
) -> Outcome:
    wid = wait_id(it.run.run_id, path, iteration)
    deadline: datetime | None
    if resume is not None:
        # Carried across continue-as-new while waiting: the same wait, its deadline.
        data = WaitCreatedData.model_validate(resume.state["wait"])
        filters: Any = resume.state["filters"]
        deadline = _time(resume.state.get("deadline"))
        it.reopen_wait(data)
    else:
        key = it.evaluate(step.correlation_key, path, "correlation_key", local)
        if key is None or isinstance(key, dict | list) or key_text(key) == "":
            raise StepError(
                "ValidationError",
                WAIT_CORRELATION_KEY_INVALID,
                f"correlation_key gave {key!r}; a wait needs a key",
                path,
            )
        filters = it.evaluate(step.filters, path, "filters", local)
        timeout_ms = step.timeout_ms
        timeout = timedelta(milliseconds=float(timeout_ms)) if timeout_ms else None
        data = WaitCreatedData(
            wait_id=wid,
            wait_type="event",
            step_path=path,
            event_type=step.event_type,
            correlation_key=key_text(key),
            filters=filters,
            timeout_at=it.host.now() + timeout if timeout else None,
            eligible_from=it.wait_from,
        )
        it.open_wait(data)
        await it.flush()
        # The timer starts once the wait is announced, as it always has.
        deadline = it.host.now() + timeout if timeout else None
    event_type, key_str = step.event_type, data.correlation_key
    eligible_from = data.eligible_from or it.wait_from
    skew = it.skew
    found: list[DeliveredEvent] = []

    def ready() -> bool:
        """Take the first buffered event this wait may take; let go of the ones no
        wait of the run may take any more (the next wait starts no earlier than now)."""
        if found:
            return True
        buffer = it.signals.buffer
        now = it.host.now()
        keep: list[DeliveredEvent] = []
        for index, candidate in enumerate(buffer):
            received = received_time(candidate.received_at)
            if not may_take(received, eligible_from, skew):
                it.drop_buffered(candidate, "before_wait")
            elif (
                candidate.event_type == event_type
                and candidate.correlation_key == key_str
                and wait_filters.all_match(candidate.payload, filters)
            ):
                found.append(candidate)
                keep.extend(buffer[index + 1 :])
                break
            elif not may_take(received, now, skew):
                it.drop_buffered(candidate, "not_taken")
            else:
                keep.append(candidate)
        if len(keep) != len(buffer):
            buffer[:] = keep
        return bool(found)

    def wake() -> bool:
        return ready() or it.switch_due_while_waiting() or len(it.signals.dropped) >= DROPS_PER_LOG

    while not ready():
        left = None if deadline is None else (deadline - it.host.now()).total_seconds()
        if left is not None and left <= 0:
            break
        if it.switch_due_while_waiting():
            raise ContinueAsNewRequested.inside_step(
                {
                    "wait": data.model_dump(mode="json"),
                    "filters": filters,
                    "deadline": deadline.isoformat() if deadline else None,
                }
            )
        if not await it.host.wait_until(wake, left):
            break
        if not found and len(it.signals.dropped) >= DROPS_PER_LOG:
            await it.flush()
    if not found:
        it.close_wait(wid, "TIMED_OUT")
        raise StepError(
            "TimeoutError",
            WAIT_TIMED_OUT,
            f"no {event_type} event for key {key_str} within {step.timeout_ms} ms",
            path,
            {"wait_id": wid},
        )
    event = found[0]
    it.close_wait(wid, "RESOLVED", event.event_id)
    context_event = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "correlation_key": event.correlation_key,
        "payload": event.payload,
        "received_at": event.received_at,
    }
    it.assign_map(step.assign, path, local, {"event": context_event})
    return Outcome(output={"event_id": event.event_id})


def _time(text: Any) -> datetime | None:
    return datetime.fromisoformat(str(text)) if text else None


async def time_wait(
    it: RunState, step: TimeWaitStep, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    now = it.host.now()
    if step.until is not None:
        until = it.evaluate(step.until, path, "until", local)
        try:
            target = datetime.fromisoformat(str(until).replace("Z", "+00:00"))
        except ValueError:
            raise StepError(
                "ValidationError",
                WAIT_UNTIL_INVALID,
                f"until gave {until!r}, not an ISO time",
                path,
            ) from None
        if target.tzinfo is None:
            raise StepError(
                "ValidationError",
                WAIT_UNTIL_INVALID,
                f"until gave {until!r} without a UTC offset",
                path,
            )
    else:
        duration = it.evaluate(step.duration_ms, path, "duration_ms", local)
        if not isinstance(duration, int | float) or isinstance(duration, bool):
            raise StepError(
                "ValidationError", WAIT_DURATION_INVALID, f"duration_ms gave {duration!r}", path
            )
        target = now + timedelta(milliseconds=float(duration))
    seconds = (target - now).total_seconds()
    if seconds > 0:
        wid = wait_id(it.run.run_id, path, iteration)
        it.open_wait(
            WaitCreatedData(wait_id=wid, wait_type="time", step_path=path, timeout_at=target)
        )
        await it.flush()
        await it.host.sleep(seconds)
        it.close_wait(wid, "RESOLVED")
    it.assign_map(step.assign, path, local)
    return Outcome(output={"slept_ms": max(0, round(seconds * 1000))})


def task_id_for(run_id: str, path: str, iteration: str) -> str:
    return str(uuid.uuid5(TASK_NAMESPACE, f"{run_id}|{path}|{iteration}"))


def schema_problems(schema: dict[str, Any], data: Any) -> list[dict[str, str]]:
    validator = jsonschema.Draft202012Validator(schema or {})
    return [
        {"path": "/".join(str(p) for p in e.absolute_path) or "(response)", "message": e.message}
        for e in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    ]


async def human_task(
    it: RunState,
    step: HumanTaskStep,
    path: str,
    iteration: str,
    local: Local,
    resume: Resume | None,
) -> Outcome:
    task_id = task_id_for(it.run.run_id, path, iteration)
    title = it.evaluate(step.title, path, "title", local)
    description = it.evaluate(step.description, path, "description", local)
    context = it.evaluate(step.context, path, "context", local)
    form_schema = dict(step.form_schema or {})
    it.event(
        HumanTaskCreatedData(
            task_id=task_id,
            step_path=path,
            task_type=step.task_type,
            title=title if isinstance(title, str) else str(title),
            description=None if description is None else str(description),
            context=context,
            form_schema=form_schema,
        )
    )
    wid = wait_id(it.run.run_id, path, iteration)
    it.open_wait(WaitCreatedData(wait_id=wid, wait_type="human", step_path=path, task_id=task_id))
    it.open_tasks[task_id] = {"form_schema": form_schema, "step_path": path}
    await it.flush()
    refusal_fails = it.host.patched(REFUSED_RESPONSE_FAILS)
    while True:
        await it.host.wait_until(lambda: bool(it.signals.completions.get(task_id)), None)
        completion = it.signals.completions[task_id].pop(0)
        problems = schema_problems(form_schema, completion.response)
        if not problems or refusal_fails:
            break
        # Executions from before the change log the refusal and wait on; replaying
        # them must take the same path.
        it.event(
            RunLogData(
                level="WARNING",
                message=f"response to task {task_id} refused by its form schema",
                details={"task_id": task_id, "problems": problems},
            )
        )
        await it.flush()
    it.open_tasks.pop(task_id, None)
    if problems:
        # The CLI validates before signalling; this is the authority's own check, for
        # a response that came any other way (a signal sent straight to Temporal).
        it.event(
            HumanTaskCompletedData(
                task_id=task_id,
                response=completion.response,
                completed_by=completion.completed_by,
                status="REFUSED",
            )
        )
        it.close_wait(wid, "CANCELED")
        raise StepError(
            "ValidationError",
            HUMAN_TASK_RESPONSE_INVALID,
            f"the response to task {task_id} breaks its form schema: {problems[0]['message']}",
            path,
            {"task_id": task_id, "completed_by": completion.completed_by, "problems": problems},
        )
    it.event(
        HumanTaskCompletedData(
            task_id=task_id, response=completion.response, completed_by=completion.completed_by
        )
    )
    it.close_wait(wid, "RESOLVED")
    task = {
        "task_id": task_id,
        "response": completion.response,
        "completed_by": completion.completed_by,
    }
    it.assign_map(step.assign, path, local, {"task": task})
    return Outcome(output={"task_id": task_id})


async def call_workflow(
    it: RunState,
    step: CallWorkflowStep,
    path: str,
    iteration: str,
    local: Local,
    resume: Resume | None,
) -> Outcome:
    reply = await it.host.load_definition(
        DefinitionRequest(
            tenant=it.run.tenant, definition_id=step.definition_id, version=step.version
        )
    )
    data = it.evaluate(step.input, path, "input", local)
    problems = schema_problems(reply.definition.get("payload_schema") or {}, data)
    if problems:
        raise StepError(
            "ValidationError",
            CHILD_INPUT_INVALID,
            f"child input does not match {reply.definition_id}'s payload schema",
            path,
            {"problems": problems},
        )
    retry = Retry(step.retry)
    result: RunResult | None = None
    child_run_id = ""
    for attempt in range(1, retry.attempts + 1):
        child_run_id = str(
            uuid.uuid5(CHILD_NAMESPACE, f"{it.run.run_id}|{path}|{iteration}|{attempt}")
        )
        await it.flush()
        try:
            result = await it.host.run_child(
                RunInput(
                    run_id=child_run_id,
                    workflow_id=run_workflow_id(child_run_id),
                    tenant=it.run.tenant,
                    definition_id=reply.definition_id,
                    version=reply.version,
                    definition_hash=reply.definition_hash,
                    definition=reply.definition,
                    input=data,
                    parent_run_id=it.run.run_id,
                    root_run_id=it.run.root_run_id or it.run.run_id,
                    parent_step_path=path,
                    expressions=it.run.expressions,
                    options=it.run.options,
                )
            )
            break
        except StepError as failure:
            failure.step_path = failure.step_path or path
            if retry.again(attempt, failure):
                await retry.pause(it)
                continue
            raise
    assert result is not None
    child = {"run_id": child_run_id, "status": result.status, "output": result.output}
    it.assign_map(step.output, path, local, {"child": child})
    return Outcome(output=child)
