"""A human task's form, generated from its form_schema: one input per property
(strings, numbers, integers, booleans, enums; required ones marked), the posted form
turned back into a response object, and the schema's errors placed at their field."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from html import escape
from typing import Any

KINDS = ("string", "number", "integer", "boolean")
_REQUIRED = re.compile(r"^'(?P<name>[^']+)' is a required property$")
# Where errors about the response as a whole go.
WHOLE = "(response)"


@dataclass(frozen=True)
class FormField:
    name: str
    kind: str  # one of KINDS, or "enum"
    required: bool
    title: str
    description: str | None
    choices: tuple[Any, ...] = ()
    default: Any = None


def fields(schema: dict[str, Any] | None) -> list[FormField]:
    schema = schema or {}
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    required = set(schema.get("required") or [])
    out = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        enum = spec.get("enum")
        kind = spec.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k in KINDS), "string")
        out.append(
            FormField(
                name=str(name),
                kind="enum" if isinstance(enum, list) else kind if kind in KINDS else "string",
                required=name in required,
                title=str(spec.get("title") or name),
                description=spec.get("description"),
                choices=tuple(enum) if isinstance(enum, list) else (),
                default=spec.get("default"),
            )
        )
    return out


def _number(text: str, integer: bool) -> Any:
    """A number when the text is one; else the text itself, so that the schema says
    what is wrong with it (its type), in its own words."""
    with contextlib.suppress(ValueError):
        return int(text)
    if integer:
        return text
    try:
        return float(text)
    except ValueError:
        return text


def response(form: list[FormField], posted: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in form:
        raw = posted.get(field.name)
        if field.kind == "boolean":
            out[field.name] = raw is not None
            continue
        if raw is None or raw == "":
            continue  # left empty: absent, which `required` refuses if it must be there
        if field.kind == "enum":
            by_text = {str(choice): choice for choice in field.choices}
            out[field.name] = by_text.get(raw, raw)
        elif field.kind in ("number", "integer"):
            out[field.name] = _number(raw.strip(), field.kind == "integer")
        else:
            out[field.name] = raw
    return out


def errors_by_field(problems: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The schema's problems keyed by the top-level field they are about; a missing
    required property belongs to its field, anything else to the whole response."""
    out: dict[str, list[str]] = {}
    for problem in problems:
        path, message = str(problem.get("path") or WHOLE), str(problem.get("message"))
        if path == WHOLE and (found := _REQUIRED.match(message)):
            path = found.group("name")
        out.setdefault(path.split("/", 1)[0], []).append(message)
    return out


def _input(field: FormField, value: Any) -> str:
    name = escape(field.name)
    required = " required" if field.required and field.kind != "boolean" else ""
    if field.kind == "boolean":
        checked = " checked" if value is True else ""
        return f'<input type="checkbox" id="f-{name}" name="{name}" value="true"{checked}>'
    if field.kind == "enum":
        options = ['<option value="">(choose)</option>'] + [
            f'<option value="{escape(str(c))}"{" selected" if str(c) == str(value) else ""}>'
            f"{escape(str(c))}</option>"
            for c in field.choices
        ]
        return f'<select id="f-{name}" name="{name}"{required}>{"".join(options)}</select>'
    # Text inputs for numbers too: the browser's own checks must not stand in for the
    # schema's (a refused answer shows the schema's words, not the browser's).
    shown = "" if value is None else escape(str(value))
    mode = ' inputmode="decimal"' if field.kind in ("number", "integer") else ""
    return f'<input type="text" id="f-{name}" name="{name}" value="{shown}"{mode}>'


def render(
    form: list[FormField],
    values: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
) -> str:
    """The form's rows; ``values`` refill a refused answer, ``errors`` sit under their
    field (and those about the whole response above the first)."""
    values = values if values is not None else {f.name: f.default for f in form}
    errors = errors or {}
    rows = []
    for message in errors.get(WHOLE, []):
        rows.append(f'<p class="error" data-field="{WHOLE}">{escape(message)}</p>')
    known = {f.name for f in form}
    for name, messages in errors.items():
        if name != WHOLE and name not in known:
            rows += [
                f'<p class="error" data-field="{escape(name)}">{escape(m)}</p>' for m in messages
            ]
    for field in form:
        mark = ' <span class="required">*</span>' if field.required else ""
        hint = (
            f'<div class="hint">{escape(str(field.description))}</div>' if field.description else ""
        )
        problems = "".join(
            f'<div class="error" data-field="{escape(field.name)}">{escape(m)}</div>'
            for m in errors.get(field.name, [])
        )
        kind = "enum" if field.kind == "enum" else field.kind
        rows.append(
            f'<div class="field" data-kind="{kind}">'
            f'<label for="f-{escape(field.name)}">{escape(field.title)}{mark}</label>'
            f"{_input(field, values.get(field.name))}{hint}{problems}</div>"
        )
    return "\n".join(rows)
