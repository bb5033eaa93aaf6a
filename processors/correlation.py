"""Correlation resolution (ARCHITECTURE §7), pure: one event dict in, one answer out.

Works on the envelope as a plain JSON dict so that the processor, the CLI and the
tests share it without depending on the envelope model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from flowledger.errors import FlowledgerError
from processors.codes import CORRELATION_CONFIG_INVALID

CorrelationSource = Literal["explicit", "derived", "missing"]

WILDCARD: Final = "*"
MISSING_DETAIL: Final = "no explicit key and no configured derivation path produced a value"
ENVELOPE_FIELD: Final = "workflow_correlation_key"
PAYLOAD_FIELDS: Final = ("workflowCorrelationKey", "correlationKey")


class CorrelationConfigError(FlowledgerError):
    """The derivation-path configuration cannot be used; a start-up error, never
    silently treated as empty."""

    code = CORRELATION_CONFIG_INVALID


@dataclass(frozen=True)
class Correlation:
    key: str | None
    source: CorrelationSource
    # The envelope field, `payload.<field>`, `path:<path>`, or why nothing matched.
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"correlation_key": self.key, "source": self.source, "detail": self.detail}


@dataclass(frozen=True)
class CorrelationPaths:
    """Derivation paths by event type; `*` applies to every event type."""

    by_event_type: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def for_event_type(self, event_type: str | None) -> tuple[str, ...]:
        """The event type's own paths first, then the wildcard's."""
        table = dict(self.by_event_type)
        own = table.get(event_type, ()) if event_type and event_type != WILDCARD else ()
        return own + table.get(WILDCARD, ())

    def to_dict(self) -> dict[str, list[str]]:
        return {event_type: list(paths) for event_type, paths in self.by_event_type}


NO_PATHS: Final = CorrelationPaths()


def load_paths(raw: str | Mapping[str, Any] | None, file: Path | None = None) -> CorrelationPaths:
    """Read the configuration from JSON text, an already-parsed mapping, or a file.

    Raises CorrelationConfigError for anything unparseable or ill-typed.
    """
    if raw is not None and file is not None:
        raise CorrelationConfigError(
            "correlation paths were given both inline and as a file; give one",
            file=str(file),
        )
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CorrelationConfigError(
                f"cannot read the correlation paths file: {exc}", file=str(file)
            ) from None
        return _from_document(_parse_json(text, str(file)))
    if raw is None:
        return NO_PATHS
    if isinstance(raw, str):
        return _from_document(_parse_json(raw, None))
    return _from_document(raw)


def _parse_json(text: str, file: str | None) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorrelationConfigError(
            f"correlation paths are not valid JSON: {exc}", file=file
        ) from None


def _from_document(document: Any) -> CorrelationPaths:
    if not isinstance(document, Mapping):
        raise CorrelationConfigError(
            'correlation paths must be a JSON object mapping an event type (or "*") '
            f"to a path or a list of paths, not {_json_type(document)}"
        )
    entries: list[tuple[str, tuple[str, ...]]] = []
    for event_type, value in document.items():
        if not isinstance(event_type, str) or not event_type.strip():
            raise CorrelationConfigError(
                f"correlation paths: {event_type!r} is not an event type",
                event_type=str(event_type),
            )
        if isinstance(value, str):
            paths: tuple[str, ...] = (_check_path(event_type, value),)
        elif isinstance(value, list) and value:
            paths = tuple(_check_path(event_type, item) for item in value)
        else:
            raise CorrelationConfigError(
                f"correlation paths for {event_type!r} must be a path or a non-empty "
                f"list of paths, not {_json_type(value)}",
                event_type=event_type,
            )
        entries.append((event_type.strip(), paths))
    return CorrelationPaths(tuple(entries))


def _check_path(event_type: str, path: Any) -> str:
    if not isinstance(path, str):
        raise CorrelationConfigError(
            f"correlation path {path!r} for {event_type!r} is {_json_type(path)}, not a string",
            event_type=event_type,
        )
    cleaned = path.strip()
    if not cleaned or any(not segment for segment in cleaned.split(".")):
        raise CorrelationConfigError(
            f"correlation path {path!r} for {event_type!r} is not a dotted path",
            event_type=event_type,
        )
    return cleaned


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _explicit(value: Any) -> str | None:
    if isinstance(value, str):
        trimmed = value.strip()
        return trimmed or None
    return None


def _derived(value: Any) -> str | None:
    """Strings, numbers and booleans are keys; objects, arrays and null are not."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        # JSON number text: 42.0 is written 42, as the event's producer would see it.
        return str(int(value)) if value.is_integer() else json.dumps(value)
    return _explicit(value)


def _lookup(payload: Mapping[str, Any], path: str) -> Any:
    current: Any = payload
    for segment in path.split("."):
        # Only objects are walked: `items.0.id` does not index into arrays.
        if not isinstance(current, Mapping) or segment not in current:
            return None
        current = current[segment]
    return current


def resolve(event: Mapping[str, Any], paths: CorrelationPaths = NO_PATHS) -> Correlation:
    """The event's correlation key; the event id is never used."""
    key = _explicit(event.get(ENVELOPE_FIELD))
    if key is not None:
        return Correlation(key, "explicit", ENVELOPE_FIELD)
    payload = event.get("payload")
    if not isinstance(payload, Mapping):
        payload = {}
    for name in PAYLOAD_FIELDS:
        key = _explicit(payload.get(name))
        if key is not None:
            return Correlation(key, "explicit", f"payload.{name}")
    event_type = event.get("event_type")
    for path in paths.for_event_type(event_type if isinstance(event_type, str) else None):
        key = _derived(_lookup(payload, path))
        if key is not None:
            return Correlation(key, "derived", f"path:{path}")
    return Correlation(None, "missing", MISSING_DETAIL)


__all__ = [
    "MISSING_DETAIL",
    "NO_PATHS",
    "Correlation",
    "CorrelationConfigError",
    "CorrelationPaths",
    "CorrelationSource",
    "load_paths",
    "resolve",
]
