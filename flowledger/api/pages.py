"""The inbox's HTML: one plain layout, no scripts, escaped everywhere."""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
header { display: flex; gap: 1.5em; align-items: baseline; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #ddd; padding: 6px; text-align: left; vertical-align: top; }
.field { margin: 0.8em 0; } .field label { display: block; font-weight: bold; }
.field input[type=text], .field select { width: 24em; padding: 4px; }
.error { color: #b71c1c; margin-top: 3px; } .hint { color: #666; font-size: 90%; }
.required { color: #b71c1c; } pre { background: #f5f5f5; padding: 8px; }
.status { font-weight: bold; }
"""


def layout(title: str, body: str, *, refresh_s: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{escape(title)} · flowledger</title>{refresh}<style>{STYLE}</style></head>"
        '<body><header><strong>flowledger</strong><a href="/ui/tasks">inbox</a></header>'
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )


def json_block(value: Any) -> str:
    return f"<pre>{escape(json.dumps(value, indent=2, ensure_ascii=False))}</pre>"


def table(columns: list[str], rows: list[list[str]], css: str = "") -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
