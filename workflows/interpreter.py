"""The interpreter: runs a pinned definition step by step.

It does no I/O itself. Everything that touches the world (emitting runtime events,
running actions, sleeping, waiting for a signal) goes through a `Host`, which the
Temporal workflow implements with activities, timers and wait conditions, and unit
tests implement in memory. Every decision is a function of the definition, the
input, the signals received and the host's clock, so Temporal can replay it."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from schemas.runtime import RUNTIME_EVENT_ADAPTER, runtime_event_id
from workflows import filters as wait_filters
from workflows.context import RunData
from workflows.errors import NEVER_CAUGHT, ReturnFromRun, StepError
from workflows.expressions import ExpressionError
from workflows.expressions import compile as compile_expression
from workflows.messages import (
    ActionRequest,
    CancelRequest,
    DeliveredEvent,
    RunInput,
    RunResult,
)

DEFAULT_RETRY_ON = ("ActionError", "TimeoutError")
FLUSH_EVERY = 200


class Host(Protocol):
    def now(self) -> datetime: ...

    async def emit(self, run_id: str, events: list[dict[str, Any]]) -> None: ...

    async def call_action(self, request: ActionRequest) -> dict[str, Any]: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_until(self, ready: Callable[[], bool], timeout_s: float | None) -> bool: ...


@dataclass
class Outcome:
    status: str = "SUCCEEDED"
    output: Any = None
    error: StepError | None = None


class Interpreter:
    def __init__(self, run: RunInput, host: Host, *, delivered_limit: int = 1000) -> None:
        self.run = run
        self.host = host
        carry = run.carry
        self.seq = (carry.next_seq - 1) if carry else 0
        self.pending: list[dict[str, Any]] = []
        self.data = RunData(payload=copy.deepcopy(run.input))
        self.delivered: OrderedDict[str, None] = OrderedDict(
            (i, None) for i in (carry.delivered_ids if carry else [])
        )
        self.delivered_limit = delivered_limit
        self.buffer: list[DeliveredEvent] = list(carry.buffered) if carry else []
        self.open_waits: dict[str, dict[str, Any]] = {}
        self.current_step: str | None = None
        self.status = "RUNNING"
        self.steps_executed = 0
        self.system = {
            "run_id": run.run_id,
            "tenant": run.tenant,
            "definition_id": run.definition_id,
            "version": run.version,
            "definition_hash": run.definition_hash,
        }

    # -- signals -------------------------------------------------------------

    def deliver(self, event: DeliveredEvent) -> bool:
        """Buffer a routed event; False when its id was seen already."""
        if event.event_id in self.delivered:
            return False
        self.delivered[event.event_id] = None
        while len(self.delivered) > self.delivered_limit:
            self.delivered.popitem(last=False)
        self.buffer.append(event)
        return True

    def note_cancel_request(self, request: CancelRequest) -> None:
        self._event(
            "RunLog",
            {
                "level": "WARNING",
                "message": f"cancel requested: {request.reason}",
                "details": {"action": "cancel", "requested_by": request.requested_by},
            },
        )

    # -- runtime events ------------------------------------------------------

    def _event(self, type_: str, data: dict[str, Any]) -> None:
        self.seq += 1
        raw = {
            "event_id": str(runtime_event_id(self.run.run_id, self.seq)),
            "run_id": self.run.run_id,
            "tenant": self.run.tenant,
            "seq": self.seq,
            "occurred_at": self.host.now().isoformat(),
            "type": type_,
            "data": data,
        }
        try:
            event = RUNTIME_EVENT_ADAPTER.validate_python(raw)
        except ValueError as exc:
            raise StepError(
                "InterpreterCorruption",
                "RUNTIME_EVENT_INVALID",
                f"{type_} event does not fit its schema: {exc}",
                self.current_step,
            ) from None
        self.pending.append(RUNTIME_EVENT_ADAPTER.dump_python(event, mode="json"))

    async def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            await self.host.emit(self.run.run_id, batch)

    async def _maybe_flush(self) -> None:
        if len(self.pending) >= FLUSH_EVERY:
            await self.flush()

    # -- expressions ---------------------------------------------------------

    def evaluate(
        self,
        value: Any,
        path: str,
        field: str,
        local: dict[str, Any],
        additions: dict[str, Any] | None = None,
    ) -> Any:
        if isinstance(value, dict):
            if set(value) == {"$expr"}:
                options = self.run.expressions
                try:
                    compiled = compile_expression(
                        value["$expr"],
                        extra_functions=options.extra_functions,
                        step_budget=options.step_budget,
                        max_output_chars=options.max_output_chars,
                    )
                    return compiled.evaluate(
                        self.data.context(self.system, local, additions), self.host.now()
                    )
                except ExpressionError as exc:
                    raise StepError(
                        "ExpressionError",
                        exc.code,
                        exc.message,
                        path,
                        {"field": field, "expression": value["$expr"]},
                    ) from None
            return {
                k: self.evaluate(v, path, f"{field}.{k}", local, additions)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [
                self.evaluate(v, path, f"{field}[{i}]", local, additions)
                for i, v in enumerate(value)
            ]
        return copy.deepcopy(value)

    def _assign_map(
        self,
        mapping: dict[str, Any],
        path: str,
        local: dict[str, Any],
        additions: dict[str, Any] | None = None,
    ) -> None:
        # Evaluate every right-hand side first, so targets cannot see each other.
        values = {
            t: self.evaluate(e, path, f"assign.{t}", local, additions) for t, e in mapping.items()
        }
        for target, value in values.items():
            self.data.assign(target, value, local, path)

    # -- running -------------------------------------------------------------

    async def execute(self) -> RunResult:
        if self.run.carry is None:
            self._event(
                "RunStarted",
                {
                    "definition_id": self.run.definition_id,
                    "version": self.run.version,
                    "definition_hash": self.run.definition_hash,
                    "input": self.run.input,
                    "workflow_id": f"flowledger:run:{self.run.run_id}",
                    "trigger_event_id": self.run.trigger_event_id,
                    "parent_run_id": self.run.parent_run_id,
                    "root_run_id": self.run.root_run_id or self.run.run_id,
                    "parent_step_path": self.run.parent_step_path,
                },
            )
        output: Any = None
        try:
            await self.run_steps(self.run.definition.get("steps", []), "root", "", {})
        except ReturnFromRun as done:
            output = done.output
        except StepError as failure:
            self.status = "FAILED"
            self.current_step = None
            self._event("RunCompleted", {"status": "FAILED", "error": failure.as_dict()})
            await self.flush()
            return RunResult(
                run_id=self.run.run_id, status="FAILED", error=failure.as_dict(), last_seq=self.seq
            )
        self.status = "SUCCEEDED"
        self.current_step = None
        self._event("RunCompleted", {"status": "SUCCEEDED", "output": output})
        await self.flush()
        return RunResult(
            run_id=self.run.run_id, status="SUCCEEDED", output=output, last_seq=self.seq
        )

    async def finish_canceled(self) -> RunResult:
        """Called by the workflow after Temporal cancelled it: close the open waits
        and end the run, so the tables show CANCELED."""
        for wait_id in list(self.open_waits):
            self._event("WaitResolved", {"wait_id": wait_id, "resolution": "CANCELED"})
        self.open_waits.clear()
        error = StepError("Cancellation", "RUN_CANCELED", "the run was canceled", self.current_step)
        self.status = "CANCELED"
        self._event("RunCompleted", {"status": "CANCELED", "error": error.as_dict()})
        await self.flush()
        return RunResult(
            run_id=self.run.run_id, status="CANCELED", error=error.as_dict(), last_seq=self.seq
        )

    async def run_steps(
        self, steps: list[dict[str, Any]], base: str, iteration: str, local: dict[str, Any]
    ) -> None:
        for index, step in enumerate(steps):
            await self.run_step(step, f"{base}.steps[{index}]", iteration, local)

    async def run_step(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> None:
        kind = str(step.get("type"))
        handler = _HANDLERS.get(kind)
        self.current_step = path
        self.steps_executed += 1
        common = {"step_path": path, "step_id": step.get("id"), "step_type": kind}
        self._event("StepStarted", {**common, "iteration": _iteration_number(iteration)})
        try:
            if handler is None:
                raise StepError(
                    "InterpreterCorruption",
                    "STEP_TYPE_UNKNOWN",
                    f"no handler for step type {kind!r}",
                    path,
                )
            outcome = await handler(self, step, path, iteration, local)
        except StepError as failure:
            if failure.step_path is None:
                failure.step_path = path
            self._event("StepCompleted", {**common, "status": "FAILED", "error": failure.as_dict()})
            raise
        except ReturnFromRun:
            self._event("StepCompleted", {**common, "status": "SUCCEEDED"})
            raise
        self._event(
            "StepCompleted",
            {
                **common,
                "status": outcome.status,
                "output": outcome.output,
                "error": outcome.error.as_dict() if outcome.error else None,
            },
        )
        await self._maybe_flush()

    # -- step types ----------------------------------------------------------

    async def _assign(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> Outcome:
        self._assign_map(step.get("assign") or {}, path, local)
        return Outcome()

    async def _if(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> Outcome:
        condition = self.evaluate(step.get("condition"), path, "condition", local)
        if not isinstance(condition, bool):
            raise StepError(
                "ExpressionError",
                "CONDITION_NOT_BOOLEAN",
                f"condition gave {type(condition).__name__}, not a boolean",
                path,
                {"value": condition},
            )
        branch = "then" if condition else "else"
        await self.run_steps(step.get(branch) or [], f"{path}.{branch}", iteration, local)
        return Outcome(output={"branch": branch})

    async def _for_each(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> Outcome:
        items = self.evaluate(step.get("items"), path, "items", local)
        if not isinstance(items, list):
            raise StepError(
                "ExpressionError",
                "ITEMS_NOT_ARRAY",
                f"items gave {type(items).__name__}, not an array",
                path,
            )
        item_var = str(step.get("item_var") or "item")
        continue_on_error = step.get("on_item_error") == "continue"
        failed = 0
        for index, item in enumerate(items):
            frame = {
                **local,
                item_var: item,
                "index": index,
                "length": len(items),
                "is_first": index == 0,
                "is_last": index == len(items) - 1,
            }
            inner = f"{iteration}.{index}" if iteration else str(index)
            try:
                await self.run_steps(step.get("body") or [], f"{path}.body", inner, frame)
            except StepError as failure:
                if not (continue_on_error and failure.catchable):
                    raise
                failed += 1
        return Outcome(output={"items": len(items), "failed": failed})

    async def _try_catch(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> Outcome:
        try:
            await self.run_steps(step.get("try") or [], f"{path}.try", iteration, local)
            return Outcome(output={"caught": False})
        except StepError as failure:
            if not failure.catchable:
                raise
            name = step.get("capture_error_as")
            if name:
                self.data.vars[str(name)] = failure.as_dict()
            await self.run_steps(step.get("catch") or [], f"{path}.catch", iteration, local)
            return Outcome(output={"caught": True, "error": failure.as_dict()})

    async def _return(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> Outcome:
        output = self.evaluate(step.get("output"), path, "output", local)
        raise ReturnFromRun(output)

    async def _action(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> Outcome:
        action, version = str(step.get("action")), int(step.get("version", 1))
        data = self.evaluate(step.get("input") or {}, path, "input", local)
        default_key = f"{self.run.run_id}:{path}:{iteration}:{action}:{version}"
        key = (
            self.evaluate(step["idempotency_key"], path, "idempotency_key", local)
            if step.get("idempotency_key") is not None
            else default_key
        )
        retry = step.get("retry") or {}
        attempts = max(1, int(retry.get("max_attempts", 1)))
        delay_ms = float(retry.get("backoff_ms", 1000))
        multiplier = float(retry.get("backoff_multiplier", 2.0))
        max_delay_ms = float(retry.get("max_delay_ms", 60_000))
        retry_on = tuple(retry.get("retry_on") or DEFAULT_RETRY_ON)
        for attempt in range(1, attempts + 1):
            await self.flush()
            request = ActionRequest(
                run_id=self.run.run_id,
                tenant=self.run.tenant,
                step_path=path,
                iteration=iteration,
                action=action,
                version=version,
                input=data,
                idempotency_key=str(key),
                attempt=attempt,
            )
            record = {
                "invocation_id": f"{key}#{attempt}",
                "step_path": path,
                "action": action,
                "version": version,
                "attempt": attempt,
                "idempotency_key": str(key),
                "input": data,
            }
            try:
                result = await self.host.call_action(request)
            except StepError as failure:
                failure.step_path = failure.step_path or path
                self._event(
                    "ActionInvocation", {**record, "status": "FAILED", "error": failure.as_dict()}
                )
                if failure.category in NEVER_CAUGHT:
                    raise
                if attempt < attempts and failure.category in retry_on and failure.retryable:
                    await self.flush()
                    await self.host.sleep(min(delay_ms, max_delay_ms) / 1000.0)
                    delay_ms *= multiplier
                    continue
                if step.get("on_error") == "continue":
                    return Outcome(status="FAILED", error=failure)
                raise
            output = result.get("output", {})
            self._event("ActionInvocation", {**record, "status": "SUCCEEDED", "output": output})
            if result.get("run_log"):
                self._event("RunLog", result["run_log"])
            if step.get("save_as"):
                self.data.assign(str(step["save_as"]), output, local, path)
            return Outcome(output=output)
        raise StepError(
            "InterpreterCorruption",
            "RETRY_LOOP_EXHAUSTED",
            "retry loop ended without an outcome",
            path,
        )

    def _open_wait(self, wait_id: str, data: dict[str, Any]) -> None:
        self.open_waits[wait_id] = data
        self.status = "WAITING"
        self._event("WaitCreated", {"wait_id": wait_id, **data})

    def _close_wait(self, wait_id: str, resolution: str, matched: str | None = None) -> None:
        self.open_waits.pop(wait_id, None)
        if not self.open_waits:
            self.status = "RUNNING"
        self._event(
            "WaitResolved",
            {"wait_id": wait_id, "resolution": resolution, "matched_event_id": matched},
        )

    async def _event_wait(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> Outcome:
        event_type = str(step.get("event_type") or "")
        key = self.evaluate(step.get("correlation_key"), path, "correlation_key", local)
        if key is None or isinstance(key, dict | list):
            raise StepError(
                "ValidationError",
                "WAIT_CORRELATION_KEY_INVALID",
                f"correlation_key gave {key!r}; a wait needs a key",
                path,
            )
        key_text = _key_text(key)
        filters = self.evaluate(step.get("filters") or [], path, "filters", local)
        timeout_ms = step.get("timeout_ms")
        now = self.host.now()
        timeout_at = now + timedelta(milliseconds=float(timeout_ms)) if timeout_ms else None
        wait_id = _wait_id(self.run.run_id, path, iteration)
        self._open_wait(
            wait_id,
            {
                "wait_type": "event",
                "step_path": path,
                "event_type": event_type,
                "correlation_key": key_text,
                "filters": filters,
                "timeout_at": timeout_at.isoformat() if timeout_at else None,
            },
        )
        await self.flush()
        found: list[DeliveredEvent] = []

        def ready() -> bool:
            for index, candidate in enumerate(self.buffer):
                if (
                    candidate.event_type == event_type
                    and candidate.correlation_key == key_text
                    and wait_filters.all_match(candidate.payload, filters)
                ):
                    found.append(self.buffer.pop(index))
                    return True
            return False

        timeout_s = float(timeout_ms) / 1000.0 if timeout_ms else None
        if not ready() and not await self.host.wait_until(ready, timeout_s):
            self._close_wait(wait_id, "TIMED_OUT")
            raise StepError(
                "TimeoutError",
                "WAIT_TIMED_OUT",
                f"no {event_type} event for key {key_text} within {timeout_ms} ms",
                path,
                {"wait_id": wait_id},
            )
        event = found[0]
        self._close_wait(wait_id, "RESOLVED", event.event_id)
        context_event = {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "correlation_key": event.correlation_key,
            "payload": event.payload,
            "received_at": event.received_at,
        }
        self._assign_map(step.get("assign") or {}, path, local, {"event": context_event})
        return Outcome(output={"event_id": event.event_id})

    async def _time_wait(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> Outcome:
        now = self.host.now()
        if step.get("until") is not None:
            until = self.evaluate(step["until"], path, "until", local)
            try:
                target = datetime.fromisoformat(str(until).replace("Z", "+00:00"))
            except ValueError:
                raise StepError(
                    "ValidationError",
                    "WAIT_UNTIL_INVALID",
                    f"until gave {until!r}, not an ISO time",
                    path,
                ) from None
            if target.tzinfo is None:
                raise StepError(
                    "ValidationError",
                    "WAIT_UNTIL_INVALID",
                    f"until gave {until!r} without a UTC offset",
                    path,
                )
        else:
            duration = self.evaluate(step.get("duration_ms"), path, "duration_ms", local)
            if not isinstance(duration, int | float) or isinstance(duration, bool):
                raise StepError(
                    "ValidationError",
                    "WAIT_DURATION_INVALID",
                    f"duration_ms gave {duration!r}",
                    path,
                )
            target = now + timedelta(milliseconds=float(duration))
        seconds = (target - now).total_seconds()
        if seconds > 0:
            wait_id = _wait_id(self.run.run_id, path, iteration)
            self._open_wait(
                wait_id, {"wait_type": "time", "step_path": path, "timeout_at": target.isoformat()}
            )
            await self.flush()
            await self.host.sleep(seconds)
            self._close_wait(wait_id, "RESOLVED")
        self._assign_map(step.get("assign") or {}, path, local)
        return Outcome(output={"slept_ms": max(0, round(seconds * 1000))})

    async def _not_yet(
        self, step: dict[str, Any], path: str, iteration: str, local: dict[str, Any]
    ) -> Outcome:
        raise StepError(
            "ValidationError",
            "STEP_NOT_YET_SUPPORTED",
            f"{step.get('type')} steps are not supported by this runtime yet",
            path,
        )


def _iteration_number(iteration: str) -> int | None:
    return int(iteration.rsplit(".", 1)[-1]) if iteration else None


def _wait_id(run_id: str, path: str, iteration: str) -> str:
    return f"{run_id}:{path}" + (f"#{iteration}" if iteration else "")


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key).strip()


Handler = Callable[[Interpreter, dict[str, Any], str, str, dict[str, Any]], Any]

_HANDLERS: dict[str, Handler] = {
    "assign": Interpreter._assign,
    "control.if": Interpreter._if,
    "control.forEach": Interpreter._for_each,
    "control.tryCatch": Interpreter._try_catch,
    "control.return": Interpreter._return,
    "action.call": Interpreter._action,
    "event.wait": Interpreter._event_wait,
    "time.wait": Interpreter._time_wait,
    "human.task": Interpreter._not_yet,
    "control.callWorkflow": Interpreter._not_yet,
}
