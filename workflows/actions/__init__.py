"""Versioned actions that `action.call` steps invoke, each run inside an activity."""

from workflows.actions.registry import REGISTRY, ActionContext, ActionFailed, ActionSpec, lookup

__all__ = ["REGISTRY", "ActionContext", "ActionFailed", "ActionSpec", "lookup"]
