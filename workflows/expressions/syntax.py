"""Parsing: the `==` spelling and the jsonata parser, with failures as EXPR_SYNTAX.

`==` is rewritten on jsonata's own token stream rather than with a regular
expression, so string literals, back-quoted names, comments and regex literals keep
their text exactly as written.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from jsonata import JException, Jsonata, Tokenizer
from jsonata.parser import Parser

from workflows.expressions.errors import EXPR_SYNTAX, ExpressionError

# After these tokens the parser expects an operator, so a `/` is division there and a
# regex literal everywhere else; mirroring that keeps the token stream faithful.
_VALUE_TOKENS = frozenset({"name", "variable", "string", "number", "value", "regex"})
_CLOSERS = frozenset({")", "]", "}"})


@dataclass(frozen=True)
class Rewritten:
    """Source handed to jsonata plus how to map its positions back to the author's."""

    text: str
    # Indices, in `text`, at which one character of the original was dropped.
    dropped_at: tuple[int, ...] = ()

    def original_position(self, position: int) -> int:
        return position + bisect_right(self.dropped_at, position)


def rewrite_double_equals(source: str) -> Rewritten:
    """Turn every `==` operator into `=`; anything inside literals stays as written."""
    if "==" not in source:
        return Rewritten(source)
    lexer = Tokenizer(source)
    dropped: list[int] = []
    previous: Tokenizer.Token | None = None
    try:
        while True:
            infix = previous is not None and (
                previous.type in _VALUE_TOKENS
                or (previous.type == "operator" and previous.value in _CLOSERS)
            )
            token = lexer.next(infix)
            if token is None:
                break
            if (
                previous is not None
                and previous.type == "operator"
                and previous.value == "="
                and token.type == "operator"
                and token.value == "="
                and token.position == previous.position + 1
                and (not dropped or dropped[-1] != previous.position - 1)
            ):
                dropped.append(previous.position)
            previous = token
    except Exception:
        # Broken text (an unterminated string, a bad regex literal...): the parser
        # will meet the same problem and report it as EXPR_SYNTAX with a position.
        return Rewritten(source)
    if not dropped:
        return Rewritten(source)
    pieces: list[str] = []
    start = 0
    for index in dropped:
        pieces.append(source[start:index])
        start = index + 1
    pieces.append(source[start:])
    # Positions in the rewritten text: each earlier drop shifted the later ones left.
    shifted = tuple(index - count for count, index in enumerate(dropped))
    return Rewritten("".join(pieces), shifted)


def parse(source: str) -> tuple[Parser.Symbol, Rewritten]:
    """Parse `source` (after the `==` rewrite) or raise EXPR_SYNTAX saying where."""
    if not source.strip():
        raise ExpressionError(EXPR_SYNTAX, "the expression is empty", expression=source, position=0)
    rewritten = rewrite_double_equals(source)
    try:
        ast = Jsonata.get_parser().parse(rewritten.text)
    except JException as exc:
        position = rewritten.original_position(max(int(exc.location), 0))
        raise ExpressionError(
            EXPR_SYNTAX,
            f"syntax error at position {position}: {exc}",
            expression=source,
            position=position,
            jsonata_code=exc.error,
        ) from None
    except RecursionError:
        raise ExpressionError(
            EXPR_SYNTAX, "the expression is nested too deeply to parse", expression=source
        ) from None
    except Exception as exc:
        # jsonata's tokenizer indexes past the end on some truncated input (`/*`).
        raise ExpressionError(
            EXPR_SYNTAX,
            f"syntax error: unexpected end or character ({type(exc).__name__})",
            expression=source,
            position=len(source),
        ) from None
    if getattr(ast, "errors", None):
        raise ExpressionError(EXPR_SYNTAX, "syntax error", expression=source)
    return ast, rewritten
