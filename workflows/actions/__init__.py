"""Versioned actions that `action.call` steps invoke, each run inside an activity."""

from workflows.actions.registry import REGISTRY, lookup
from workflows.actions.spec import ActionContext, ActionFailed, ActionSpec

__all__ = ["REGISTRY", "ActionContext", "ActionFailed", "ActionSpec", "lookup"]
