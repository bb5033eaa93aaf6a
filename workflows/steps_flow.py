"""Control-flow steps: assign, control.if, control.forEach, control.tryCatch,
control.return. Containers save their state when a continue-as-new unwinds
through them and pick it up again from `resume`."""

from __future__ import annotations

from typing import Any

from workflows.codes import CONDITION_NOT_BOOLEAN, ITEMS_NOT_ARRAY
from workflows.definitions.model import AssignStep, ForEachStep, IfStep, ReturnStep, TryCatchStep
from workflows.errors import ReturnFromRun, StepError
from workflows.run_state import ContinueAsNewRequested, Outcome, Resume, RunState

Local = dict[str, Any]


async def assign(
    it: RunState, step: AssignStep, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    it.assign_map(step.assign, path, local)
    return Outcome()


async def if_(
    it: RunState, step: IfStep, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    if resume is not None:
        branch = str(resume.state["branch"])
    else:
        condition = it.evaluate(step.condition, path, "condition", local)
        if not isinstance(condition, bool):
            raise StepError(
                "ExpressionError",
                CONDITION_NOT_BOOLEAN,
                f"condition gave {type(condition).__name__}, not a boolean",
                path,
                {"value": condition},
            )
        branch = "then" if condition else "else"
    try:
        await it.run_steps(
            step.then if branch == "then" else step.else_,
            f"{path}.{branch}",
            iteration,
            local,
            resume.inner if resume else None,
        )
    except ContinueAsNewRequested as switch:
        switch.container_state = {"branch": branch}
        raise
    return Outcome(output={"branch": branch})


async def for_each(
    it: RunState, step: ForEachStep, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    if resume is not None:
        items = list(resume.state["items"])
        first, failed = int(resume.state["item"]), int(resume.state["failed"])
    else:
        items = it.evaluate(step.items, path, "items", local)
        if not isinstance(items, list):
            raise StepError(
                "ExpressionError",
                ITEMS_NOT_ARRAY,
                f"items gave {type(items).__name__}, not an array",
                path,
            )
        first, failed = 0, 0
    item_var = step.item_var
    continue_on_error = step.on_item_error == "continue"
    for index in range(first, len(items)):
        cursor = None
        if resume is not None and index == first:
            frame, cursor = dict(resume.state["local"]), resume.inner
        else:
            frame = {
                **local,
                item_var: items[index],
                "index": index,
                "length": len(items),
                "is_first": index == 0,
                "is_last": index == len(items) - 1,
            }
        inner = f"{iteration}.{index}" if iteration else str(index)
        try:
            await it.run_steps(step.body, f"{path}.body", inner, frame, cursor)
        except ContinueAsNewRequested as switch:
            switch.container_state = {
                "items": items,
                "item": index,
                "local": frame,
                "failed": failed,
            }
            raise
        except StepError as failure:
            if not (continue_on_error and failure.catchable):
                raise
            failed += 1
    return Outcome(output={"items": len(items), "failed": failed})


async def try_catch(
    it: RunState, step: TryCatchStep, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    error: dict[str, Any] | None = None
    if resume is None or resume.state.get("phase") == "try":
        try:
            await it.run_steps(
                step.try_,
                f"{path}.try",
                iteration,
                local,
                resume.inner if resume else None,
            )
            return Outcome(output={"caught": False})
        except ContinueAsNewRequested as switch:
            switch.container_state = {"phase": "try"}
            raise
        except StepError as failure:
            if not failure.catchable:
                raise
            error = failure.as_dict()
            if step.capture_error_as:
                it.data.vars[step.capture_error_as] = error
        resume = None
    else:
        error = resume.state.get("error")
    try:
        await it.run_steps(
            step.catch,
            f"{path}.catch",
            iteration,
            local,
            resume.inner if resume else None,
        )
    except ContinueAsNewRequested as switch:
        switch.container_state = {"phase": "catch", "error": error}
        raise
    return Outcome(output={"caught": True, "error": error})


async def return_(
    it: RunState, step: ReturnStep, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    raise ReturnFromRun(it.evaluate(step.output, path, "output", local))
