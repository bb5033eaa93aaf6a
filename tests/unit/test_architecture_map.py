"""docs/architecture.md lists every module of the tree, and only those."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "topics", "processors", "workflows", "projections", "flowledger")


def test_the_module_list_matches_the_tree() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^- `([a-z_/]+\.py)`: \S", text, flags=re.M))
    tree = {
        str(p.relative_to(REPO))
        for package in PACKAGES
        for p in (REPO / package).rglob("*.py")
        if p.name != "__init__.py" and "migrations" not in p.parts
    }
    assert not tree - listed, f"add to docs/architecture.md: {sorted(tree - listed)}"
    assert not listed - tree, f"gone from the tree: {sorted(listed - tree)}"
