"""The README's CLI reference matches `--help`: every command is listed with the
first line of its help, and nothing that does not exist is listed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from flowledger.cli import _register, app

README = Path(__file__).resolve().parents[2] / "README.md"


def commands() -> dict[str, str]:
    _register()
    root = typer.main.get_command(app)
    found: dict[str, str] = {}

    def walk(command: Any, path: list[str]) -> None:
        # typer may ship its own click, so groups are recognised by shape.
        children = getattr(command, "commands", None)
        if children is not None:
            for name, child in children.items():
                walk(child, [*path, name])
            if not command.invoke_without_command:
                return
        if path:
            found[" ".join(path)] = command.get_short_help_str(limit=300)

    walk(root, [])
    return found


def reference() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## CLI reference", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `flowledger ([^`]+)` \| (.+?) \|$", section, flags=re.M)
    return {command: summary.strip() for command, summary in rows}


def test_every_command_is_in_the_readme_with_its_help() -> None:
    assert reference() == commands()
