"""Every step type, registered once: its model, the fields holding nested step lists,
its publish-time rule and its run-time handler. Publish accepts only the types
listed here, so a model without a handler cannot reach a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, get_args

from pydantic import BaseModel

from workflows import steps_effects, steps_flow
from workflows.definitions import rules
from workflows.definitions.checks import Checker
from workflows.definitions.model import (
    ActionCallStep,
    AssignStep,
    CallWorkflowStep,
    EventWaitStep,
    ForEachStep,
    HumanTaskStep,
    IfStep,
    ReturnStep,
    TimeWaitStep,
    TryCatchStep,
)
from workflows.run_state import StepHandler

# (checker, raw step, step path, fields the rule already reported) -> None
Rule = Callable[[Checker, dict[str, Any], str, set[Any]], None]


@dataclass(frozen=True)
class StepType:
    model: type[BaseModel]
    rule: Rule
    handler: StepHandler
    # Nested step lists by their name in the document; step paths use the same names.
    children: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return str(get_args(self.model.model_fields["type"].annotation)[0])


_ALL: Final = (
    StepType(AssignStep, rules.assign_step, steps_flow.assign),
    StepType(ActionCallStep, rules.action_step, steps_effects.action),
    StepType(IfStep, rules.if_step, steps_flow.if_, ("then", "else")),
    StepType(ForEachStep, rules.for_each_step, steps_flow.for_each, ("body",)),
    StepType(TryCatchStep, rules.try_catch_step, steps_flow.try_catch, ("try", "catch")),
    StepType(CallWorkflowStep, rules.call_workflow_step, steps_effects.call_workflow),
    StepType(ReturnStep, rules.return_step, steps_flow.return_),
    StepType(EventWaitStep, rules.event_wait_step, steps_effects.event_wait),
    StepType(TimeWaitStep, rules.time_wait_step, steps_effects.time_wait),
    StepType(HumanTaskStep, rules.human_task_step, steps_effects.human_task),
)

STEP_TYPES: Final[dict[str, StepType]] = {t.name: t for t in _ALL}
HANDLERS: Final[dict[str, StepHandler]] = {name: t.handler for name, t in STEP_TYPES.items()}
