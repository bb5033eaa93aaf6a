"""What publish-time checks share: the problem codes, `Problem`, and `Checker`, which
collects problems and checks the values (expressions, assignment targets, JSON
Schemas) that the walk and the per-step-type rules meet."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for

from flowledger.settings import ExpressionSettings, WorkflowSettings
from workflows.actions.spec import ActionSpec
from workflows.codes import (
    DEFINITION_ASSIGN_TARGET_INVALID,
    DEFINITION_FIELD_INVALID,
    DEFINITION_SCHEMA_INVALID,
)
from workflows.expressions import ExpressionError, compile_with

# Problem codes (expression problems carry the expression contract's own codes).

TARGET_ROOTS: Final = ("vars", "payload", "local")
# Segments that would reach an object's prototype in a JavaScript-style evaluator;
# refused everywhere so a definition means the same in any runtime.
FORBIDDEN_SEGMENTS: Final = frozenset({"__proto__", "constructor", "prototype"})
LOOP_LOCALS: Final = frozenset({"index", "length", "is_first", "is_last"})
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]+")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

NUMERIC_OPS: Final = frozenset({">", ">=", "<", "<="})
ARRAY_OPS: Final = frozenset({"in", "not_in"})
STRING_OPS: Final = frozenset({"contains", "starts_with", "ends_with"})
PRESENCE_OPS: Final = frozenset({"exists", "not_exists"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where (`path`), what (`code`), and why."""

    path: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


def loc_path(base: str, loc: Iterable[int | str]) -> str:
    out = base
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def is_expr(value: Any) -> bool:
    return isinstance(value, dict) and "$expr" in value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


class Checker:
    """Collects the problems of one definition; the value checks every rule uses."""

    def __init__(
        self,
        expressions: ExpressionSettings,
        workflows: WorkflowSettings,
        actions: Mapping[tuple[str, int], ActionSpec],
    ) -> None:
        self.expressions = expressions
        self.workflows = workflows
        # The known actions, handed in rather than imported: the rules are reached
        # from the interpreter (through the step-type registry), which must not load
        # the actions' I/O libraries.
        self.actions = actions
        self.problems: list[Problem] = []

    def add(self, path: str, code: str, message: str) -> None:
        self.problems.append(Problem(path, code, message))

    def expr(self, value: Any, path: str) -> bool:
        """Compile `value` when it is an expression; True when it is one.

        Expressions nested inside a literal object or array are compiled too: the
        interpreter evaluates them wherever they sit."""
        if not is_expr(value):
            if isinstance(value, dict):
                for key, item in value.items():
                    self.expr(item, f"{path}.{key}")
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    self.expr(item, f"{path}[{index}]")
            return False
        if set(value) != {"$expr"}:
            self.add(path, DEFINITION_FIELD_INVALID, "an expression object holds only $expr")
        try:
            compile_with(value["$expr"], self.expressions)
        except ExpressionError as exc:
            self.add(path, exc.code, exc.message)
        return True

    def expr_map(self, value: Any, path: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                self.expr(item, f"{path}.{name}")

    def target(self, target: Any, path: str) -> None:
        if not isinstance(target, str):
            self.add(path, DEFINITION_ASSIGN_TARGET_INVALID, "an assignment target is text")
            return
        root, _, rest = target.partition(".")
        if root not in TARGET_ROOTS or not rest:
            self.add(
                path,
                DEFINITION_ASSIGN_TARGET_INVALID,
                f"{target!r} is not a dotted path under vars., payload. or local.",
            )
            return
        for segment in rest.split("."):
            if segment in FORBIDDEN_SEGMENTS:
                self.add(
                    path,
                    DEFINITION_ASSIGN_TARGET_INVALID,
                    f"{target!r} uses the forbidden segment {segment!r}",
                )
                return
            if not _SEGMENT.fullmatch(segment):
                self.add(
                    path,
                    DEFINITION_ASSIGN_TARGET_INVALID,
                    f"{target!r}: segment {segment!r} is not a plain name "
                    "(letters, digits, _ and -)",
                )
                return

    def assignments(self, value: Any, path: str, *, required: bool = False) -> None:
        """A `{target: expr}` map: every target checked, every expression compiled."""
        if not isinstance(value, dict):
            return
        if required and not value:
            self.add(path, DEFINITION_FIELD_INVALID, "assigns nothing")
        for target, item in value.items():
            self.target(target, f"{path}.{target}")
            self.expr(item, f"{path}.{target}")

    def identifier(self, value: Any, path: str, what: str) -> bool:
        if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
            if value in FORBIDDEN_SEGMENTS:
                self.add(path, DEFINITION_ASSIGN_TARGET_INVALID, f"{what} {value!r} is forbidden")
                return False
            return True
        self.add(
            path,
            DEFINITION_ASSIGN_TARGET_INVALID,
            f"{what} must be a plain identifier (letters, digits, _), got {value!r}",
        )
        return False

    def json_schema(self, schema: dict[str, Any], path: str) -> None:
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            errors = list(cls(cls.META_SCHEMA).iter_errors(schema))
        except Exception as exc:  # a schema odd enough to break the meta-check itself
            self.add(path, DEFINITION_SCHEMA_INVALID, f"not a usable JSON Schema: {exc}")
            return
        for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
            self.add(
                loc_path(path, error.absolute_path),
                DEFINITION_SCHEMA_INVALID,
                f"not a valid JSON Schema: {error.message}",
            )
