"""Error codes: constants in one codes module per area, each documented in the
generated docs/errors.md, none written inline; one mapping from errors to exit codes."""

from __future__ import annotations

import ast
from pathlib import Path

from flowledger import error_catalogue
from flowledger.errors import (
    EXIT_CHECK_FAILED,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    CheckFailed,
    Conflict,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "topics", "processors", "workflows", "projections", "flowledger")


def catalogued() -> dict[str, str]:
    out: dict[str, str] = {}
    for _title, module in error_catalogue.AREAS:
        for code, meaning in error_catalogue.entries(module):
            assert code not in out, f"{code} is owned by two areas"
            assert meaning, f"{code} in {module.__name__} has no `#:` meaning"
            out[code] = module.__name__
    return out


def test_docs_errors_md_is_generated_from_the_codes() -> None:
    text = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    assert text == error_catalogue.render(), "run `python -m flowledger.error_catalogue`"


def test_no_error_code_is_written_inline() -> None:
    codes = catalogued()
    homes = {
        REPO / (module.__name__.replace(".", "/") + ".py") for _t, module in error_catalogue.AREAS
    }
    found = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if path in homes or "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            # `__all__` names the constants re-exported; those strings are names.
            exported = {
                id(c)
                for n in ast.walk(tree)
                if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
                for c in ast.walk(n.value)
            }
            for node in ast.walk(tree):
                if id(node) in exported:
                    continue
                if isinstance(node, ast.Constant) and node.value in codes:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value}")
    assert not found, "use the codes module's constant:\n" + "\n".join(found)


def test_one_mapping_from_errors_to_exit_codes() -> None:
    assert InvalidInput("x").exit == EXIT_REFUSED
    assert NotFound("x").exit == EXIT_REFUSED and NotFound("x").status == 404
    assert Conflict("x").exit == EXIT_REFUSED and Conflict("x").status == 409
    assert CheckFailed("x").exit == EXIT_CHECK_FAILED
    down = ServiceUnavailable("x")
    assert down.exit == EXIT_UNAVAILABLE and down.status == 503
    assert down.to_dict()["retryable"] is True
    assert InvalidInput("x", retryable=True).exit == EXIT_UNAVAILABLE
    assert "retryable" not in InvalidInput("x").to_dict()
