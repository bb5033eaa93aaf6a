"""The action registry: (name, version) -> spec.

Definitions name actions by id and version; publish-time validation asks this
registry, and the activity that runs an action looks it up here too, so both sides
agree on what exists. It is complete once imported: the built-in specs are values
that this module collects, not modules that register themselves."""

from __future__ import annotations

from flowledger.errors import FlowledgerError
from workflows.actions.builtins import BUILTINS
from workflows.actions.spec import ActionSpec
from workflows.codes import ACTION_UNKNOWN

REGISTRY: dict[tuple[str, int], ActionSpec] = {(s.name, s.version): s for s in BUILTINS}


def lookup(name: str, version: int) -> ActionSpec:
    spec = REGISTRY.get((name, version))
    if spec is None:
        known = sorted(v for (n, v) in REGISTRY if n == name)
        hint = f"; known versions: {known}" if known else ""
        raise FlowledgerError(
            f"unknown action {name} version {version}{hint}",
            code=ACTION_UNKNOWN,
            action=name,
            version=version,
        )
    return spec
