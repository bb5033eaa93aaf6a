"""The function allow-list, checked on the parsed expression (never on raw text).

Walking the AST is what keeps `payload.a and (b)`, `x in (1, 2)` and `"f(x)"` from
looking like calls: only nodes the parser built as calls are calls.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Final

from jsonata import Jsonata
from jsonata.parser import Parser

from workflows.expressions.errors import (
    EXPR_DISALLOWED_FUNCTION,
    EXPR_SYNTAX,
    ExpressionError,
)
from workflows.expressions.functions import WRITTEN_NULL

# jsonata parses and evaluates by recursion, about five Python frames per level of
# the tree, and raises the interpreter's recursion limit to 10,000 when imported.
# 500 levels (a chain of 498 `or` comparisons) stay near 2,600 frames, far enough
# from that limit that the outcome never depends on how much stack the caller (a
# workflow thread, nested steps) has already used, which replay determinism needs.
MAX_NESTING: Final = 500

# Built-ins that may never be allowed through settings: `eval` would parse text that
# this walk never saw; the others read the clock or a random source.
FORBIDDEN_EXTRAS: Final = frozenset({"eval", "now", "millis", "random", "shuffle"})

# Symbol attributes that point back into the parser or hold runtime state, not
# sub-expressions.
_NOT_CHILDREN: Final = frozenset(
    {"_outer_instance", "environment", "input", "signature", "errors", "error", "token"}
)


def builtin_names() -> frozenset[str]:
    """Names of jsonata's own functions (without `$`)."""
    frame = Jsonata.static_frame
    return frozenset(frame.bindings) if frame is not None else frozenset()


def check_extra_functions(names: tuple[str, ...]) -> tuple[str, ...]:
    """Normalise configured extra built-ins (leading `$` optional) or refuse them."""
    builtins = builtin_names()
    cleaned: list[str] = []
    for raw in names:
        name = raw[1:] if raw.startswith("$") else raw
        if name in FORBIDDEN_EXTRAS:
            raise ExpressionError(
                EXPR_DISALLOWED_FUNCTION,
                f"${name} cannot be allowed: it is not deterministic or bypasses validation",
                function=name,
            )
        if name not in builtins:
            raise ExpressionError(
                EXPR_DISALLOWED_FUNCTION,
                f"extra function {raw!r} is not a JSONata built-in",
                function=name,
            )
        cleaned.append(name)
    return tuple(sorted(set(cleaned)))


def _children(node: Parser.Symbol) -> Iterator[Parser.Symbol]:
    for key, value in vars(node).items():
        if key in _NOT_CHILDREN or value is None:
            continue
        if isinstance(value, Parser.Symbol):
            yield value
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, Parser.Symbol):
                    yield item
                elif isinstance(item, list | tuple):
                    yield from (x for x in item if isinstance(x, Parser.Symbol))


def _bare_name(procedure: Parser.Symbol) -> str | None:
    """The name in a `name(...)` call written without `$`, if it is that simple."""
    if getattr(procedure, "type", None) != "path":
        return None
    steps = getattr(procedure, "steps", None)
    if not steps or len(steps) != 1:
        return None
    step = steps[0]
    if getattr(step, "type", None) != "name" or not isinstance(step.value, str):
        return None
    for extra in ("stages", "predicate", "group", "focus", "index", "tuple"):
        if getattr(step, extra, None):
            return None
    return step.value


def _as_variable(step: Parser.Symbol) -> Parser.Symbol:
    variable = copy.copy(step)
    variable.type = "variable"
    return variable


def _is_coalescing_exists(node: Parser.Symbol) -> bool:
    """The `$exists` call the parser synthesises for the `??` operator.

    The parser never gives that call a position, while any call written in the text
    ends after its `(`, so position 0 tells the two apart.
    """
    condition = getattr(node, "condition", None)
    procedure = getattr(condition, "procedure", None)
    return (
        getattr(condition, "type", None) == "function"
        and getattr(condition, "position", None) == 0
        and getattr(procedure, "position", None) == 0
        and getattr(procedure, "type", None) == "variable"
        and getattr(procedure, "value", None) == "exists"
        and len(getattr(condition, "arguments", None) or []) == 1
    )


def validate(
    ast: Parser.Symbol,
    *,
    source: str,
    allowed: frozenset[str],
    position_of: Callable[[int], int] = lambda p: p,
) -> Parser.Symbol:
    """Check every call against `allowed` and rewrite bare allowed calls to `$name`.

    Mutates the freshly parsed tree (it belongs to this compile only) and returns it.
    """
    builtins = builtin_names()

    def refuse(message: str, node: Parser.Symbol, name: str | None = None) -> ExpressionError:
        raw = getattr(node, "position", None)
        position = position_of(raw) if isinstance(raw, int) and raw >= 0 else None
        return ExpressionError(
            EXPR_DISALLOWED_FUNCTION,
            message,
            expression=source,
            position=position,
            function=name,
        )

    trusted: set[int] = set()
    seen: set[int] = set()
    # Each entry carries the names bound with `:=` that are in scope at that node: a
    # bound name is the author's variable, never a reference to a built-in.
    stack: list[tuple[Parser.Symbol, int, frozenset[str]]] = [(ast, 1, frozenset())]
    while stack:
        node, depth, bound = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth > MAX_NESTING:
            raw = getattr(node, "position", None)
            raise ExpressionError(
                EXPR_SYNTAX,
                f"the expression nests more than {MAX_NESTING} levels deep",
                expression=source,
                position=position_of(raw) if isinstance(raw, int) and raw >= 0 else None,
                max_nesting=MAX_NESTING,
            )
        kind = getattr(node, "type", None)
        if kind == "lambda":
            raise refuse("lambda definitions (function(...){...}) are not allowed", node)
        if kind == "partial":
            raise refuse("partial application (a call with ? arguments) is not allowed", node)
        if kind == "transform":
            raise refuse("transform expressions (|...|...|) are not allowed", node)
        if kind == "condition" and _is_coalescing_exists(node):
            trusted.add(id(node.condition))
        if kind == "function" and id(node) not in trusted:
            _check_call(node, allowed, builtins, bound, refuse)
            _mark_written_nulls(node)
        elif kind == "variable":
            name = str(node.value)
            if name in builtins and name not in allowed and name not in bound:
                raise refuse(f"function ${name} is not allowed", node, name)
        elif kind == "apply":
            rhs = node.rhs
            rhs_kind = getattr(rhs, "type", None)
            if rhs_kind == "variable" and str(rhs.value) not in allowed:
                raise refuse(f"dynamic call of ${rhs.value} is not allowed", rhs, str(rhs.value))
            if rhs_kind not in ("function", "variable"):
                raise refuse("~> must be followed by a call of an allowed function", rhs)
        statements: list[tuple[Parser.Symbol, int, frozenset[str]]] = []
        if kind == "block":
            statements = _block_statements(node, depth + 1, bound)
            stack.extend(statements)
        in_block = {id(entry[0]) for entry in statements}
        for child in _children(node):
            if id(child) in in_block:
                continue
            if kind == "function" and child is node.procedure:
                # Checked (and possibly replaced) above, or the parser's own `$exists`.
                continue
            if kind == "bind" and child is node.lhs:
                # The name being bound, not a use of whatever the name meant before.
                continue
            stack.append((child, depth + 1, bound))
    return ast


def _block_statements(
    block: Parser.Symbol, depth: int, bound: frozenset[str]
) -> list[tuple[Parser.Symbol, int, frozenset[str]]]:
    """A block's statements, each with the names bound by the statements before it.

    Only a `:=` written as a statement of the block counts: it always runs before the
    later statements, in the block's own frame, which is all the later statements
    (and the blocks inside them) can see. A binding anywhere else stays unknown, so a
    name it binds is still checked as the built-in it would otherwise be.
    """
    entries: list[tuple[Parser.Symbol, int, frozenset[str]]] = []
    names = bound
    for statement in getattr(block, "expressions", None) or []:
        if not isinstance(statement, Parser.Symbol):
            continue
        entries.append((statement, depth, names))
        if getattr(statement, "type", None) == "bind":
            target = getattr(statement, "lhs", None)
            if target is not None and getattr(target, "type", None) == "variable":
                names = names | {str(target.value)}
    return entries


def _mark_written_nulls(node: Parser.Symbol) -> None:
    """`append` tells a null written in the expression (an item, as in JSONata) from a
    null read from the data (an empty list, the public contract's "append to null");
    jsonata gives both the same value, so the written ones are marked here."""
    procedure = node.procedure
    if getattr(procedure, "type", None) != "variable" or procedure.value != "append":
        return
    for argument in node.arguments or []:
        if getattr(argument, "type", None) == "value" and argument.value is None:
            argument.value = WRITTEN_NULL


def _check_call(
    node: Parser.Symbol,
    allowed: frozenset[str],
    builtins: frozenset[str],
    bound: frozenset[str],
    refuse: Callable[..., ExpressionError],
) -> None:
    procedure = node.procedure
    kind = getattr(procedure, "type", None)
    if kind == "variable":
        name = str(procedure.value)
        if name in allowed:
            return
        if name in bound:
            raise refuse(
                f"dynamic call of ${name} (a variable bound with :=) is not allowed", node, name
            )
        if name in builtins:
            raise refuse(f"function ${name} is not allowed", node, name)
        raise refuse(f"dynamic call of ${name} is not allowed", node, name)
    if kind == "lambda":
        raise refuse("lambda definitions (function(...){...}) are not allowed", node)
    bare = _bare_name(procedure)
    if bare is not None:
        if bare in allowed:
            # `len(x)` would otherwise look up a field called `len` in the input.
            node.procedure = _as_variable(procedure.steps[0])
            return
        raise refuse(f"function {bare} is not allowed", node, bare)
    raise refuse("dynamic calls (calling the result of an expression) are not allowed", node)


__all__ = ["FORBIDDEN_EXTRAS", "MAX_NESTING", "builtin_names", "check_extra_functions", "validate"]
