"""Control-flow steps: assign, control.if, control.forEach, control.tryCatch,
control.return. Containers save their state when a continue-as-new unwinds
through them and pick it up again from `resume`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workflows.errors import ReturnFromRun, StepError
from workflows.interpreter import ContinueAsNewRequested, Outcome, Resume

if TYPE_CHECKING:
    from workflows.interpreter import Interpreter

Step = dict[str, Any]
Local = dict[str, Any]


async def assign(
    it: Interpreter, step: Step, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    it.assign_map(step.get("assign") or {}, path, local)
    return Outcome()


async def if_(
    it: Interpreter, step: Step, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    if resume is not None:
        branch = str(resume.state["branch"])
    else:
        condition = it.evaluate(step.get("condition"), path, "condition", local)
        if not isinstance(condition, bool):
            raise StepError(
                "ExpressionError",
                "CONDITION_NOT_BOOLEAN",
                f"condition gave {type(condition).__name__}, not a boolean",
                path,
                {"value": condition},
            )
        branch = "then" if condition else "else"
    try:
        await it.run_steps(
            step.get(branch) or [],
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
    it: Interpreter, step: Step, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    if resume is not None:
        items = list(resume.state["items"])
        first, failed = int(resume.state["item"]), int(resume.state["failed"])
    else:
        items = it.evaluate(step.get("items"), path, "items", local)
        if not isinstance(items, list):
            raise StepError(
                "ExpressionError",
                "ITEMS_NOT_ARRAY",
                f"items gave {type(items).__name__}, not an array",
                path,
            )
        first, failed = 0, 0
    item_var = str(step.get("item_var") or "item")
    continue_on_error = step.get("on_item_error") == "continue"
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
            await it.run_steps(step.get("body") or [], f"{path}.body", inner, frame, cursor)
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
    it: Interpreter, step: Step, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    error: dict[str, Any] | None = None
    if resume is None or resume.state.get("phase") == "try":
        try:
            await it.run_steps(
                step.get("try") or [],
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
            name = step.get("capture_error_as")
            if name:
                it.data.vars[str(name)] = error
        resume = None
    else:
        error = resume.state.get("error")
    try:
        await it.run_steps(
            step.get("catch") or [],
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
    it: Interpreter, step: Step, path: str, iteration: str, local: Local, resume: Resume | None
) -> Outcome:
    raise ReturnFromRun(it.evaluate(step.get("output"), path, "output", local))
