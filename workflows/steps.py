"""Step type -> handler."""

from __future__ import annotations

from workflows import steps_effects, steps_flow
from workflows.interpreter import StepHandler

HANDLERS: dict[str, StepHandler] = {
    "assign": steps_flow.assign,
    "control.if": steps_flow.if_,
    "control.forEach": steps_flow.for_each,
    "control.tryCatch": steps_flow.try_catch,
    "control.return": steps_flow.return_,
    "action.call": steps_effects.action,
    "event.wait": steps_effects.event_wait,
    "time.wait": steps_effects.time_wait,
    "human.task": steps_effects.human_task,
    "control.callWorkflow": steps_effects.call_workflow,
}
