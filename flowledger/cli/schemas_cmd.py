"""`flowledger schemas export|check`."""

from __future__ import annotations

from pathlib import Path

import typer

from flowledger import schema_export as export
from flowledger.cli.output import EXIT_CHECK_FAILED, JSON_FLAG, console, print_json

app = typer.Typer(help="Export the records' JSON Schema files.")


@app.command("export")
def export_cmd(
    out: Path = typer.Option(export.JSON_DIR, "--out", help="Directory to write into."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Write the JSON Schema of every record to schemas/json/."""
    paths = export.write(out)
    if as_json:
        print_json([str(p) for p in paths])
    else:
        for path in paths:
            console.print(f"wrote {path}")


@app.command("check")
def check_cmd(as_json: bool = JSON_FLAG) -> None:
    """Exit 1 when the committed JSON Schema files are stale."""
    problems = export.stale()
    if as_json:
        print_json({"stale": problems})
    elif problems:
        console.print(f"stale: {', '.join(problems)}")
    else:
        console.print("schemas are up to date")
    if problems:
        raise typer.Exit(EXIT_CHECK_FAILED)
