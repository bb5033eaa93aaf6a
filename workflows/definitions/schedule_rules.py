"""Publish-time rules of schedule triggers: every problem of every schedule, with its
path (cron syntax, unknown timezone, `at` in the past, missing or repeated names).

Only the cross-field and value rules live here; the field shapes are the
ScheduleTrigger model's, checked by the walk like every other part."""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from typing import Any, Final

from workflows.codes import (
    DEFINITION_FIELD_INVALID,
    DEFINITION_FIELD_MISSING,
    DEFINITION_SCHEDULE_AT_PAST,
    DEFINITION_SCHEDULE_CRON_INVALID,
    DEFINITION_SCHEDULE_DUPLICATE_NAME,
    DEFINITION_SCHEDULE_SPEC,
    DEFINITION_SCHEDULE_TIMEZONE_UNKNOWN,
)
from workflows.definitions.checks import Checker, is_iso

DEFAULT_SCHEDULE_NAME: Final = "default"
# A name is one segment of the schedule id flowledger:schedule:<tenant>:<id>:<name>.
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,100}")
SPEC_FIELDS: Final = ("cron", "interval_ms", "at")

_MONTHS: Final = {
    m: i + 1
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_DAYS: Final = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
# (field name, lowest, highest, names); day-of-week 7 is Sunday again.
_CRON_FIELDS: Final[tuple[tuple[str, int, int, dict[str, int]], ...]] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
CRON_MACROS: Final = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a five-field cron (or one of CRON_MACROS); None if it is."""
    text = expression.strip()
    if text.startswith("@"):
        return None if text in CRON_MACROS else f"unknown cron macro {text!r}"
    fields = text.split()
    if len(fields) != len(_CRON_FIELDS):
        return (
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}"
        )
    for value, (what, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in value.split(","):
            why = _item_problem(item, low, high, names)
            if why is not None:
                return f"{what} field {value!r}: {why}"
    return None


def _item_problem(item: str, low: int, high: int, names: dict[str, int]) -> str | None:
    base, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) >= 1):
        return f"step {step!r} is not a positive number"
    if base in ("*", "?"):
        return None
    start, dash, end = base.partition("-")
    bounds = [start, end] if dash else [start]
    numbers = []
    for bound in bounds:
        number = names.get(bound.upper()) if bound and not bound.isdigit() else None
        if number is None:
            if not bound.isdigit():
                return f"{bound!r} is not a number or a name"
            number = int(bound)
        if not low <= number <= high:
            return f"{number} is outside {low}-{high}"
        numbers.append(number)
    if len(numbers) == 2 and numbers[0] > numbers[1]:
        return f"range {base!r} runs backwards"
    return None


def timezone_known(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def schedule_entries(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, trigger) of every schedule trigger of a raw document, in order."""
    out: list[tuple[str, dict[str, Any]]] = []
    trigger = document.get("trigger")
    if isinstance(trigger, dict) and trigger.get("type") == "schedule":
        out.append(("root.trigger", trigger))
    triggers = document.get("triggers")
    if isinstance(triggers, list):
        out.extend(
            (f"root.triggers[{i}]", t)
            for i, t in enumerate(triggers)
            if isinstance(t, dict) and t.get("type") == "schedule"
        )
    return out


def check_schedules(checker: Checker, document: dict[str, Any], now: datetime) -> None:
    names: dict[str, str] = {}
    for path, trigger in schedule_entries(document):
        listed = path != "root.trigger"
        name = trigger.get("name", None if listed else DEFAULT_SCHEDULE_NAME)
        if name is None:
            checker.add(
                f"{path}.name", DEFINITION_FIELD_MISSING, "each of several schedules needs a name"
            )
        elif not isinstance(name, str) or not _NAME.fullmatch(name):
            checker.add(
                f"{path}.name",
                DEFINITION_FIELD_INVALID,
                "a schedule name is 1-100 letters, digits, '_', '.' or '-'",
            )
        else:
            first = names.setdefault(name, path)
            if first != path:
                checker.add(
                    f"{path}.name",
                    DEFINITION_SCHEDULE_DUPLICATE_NAME,
                    f"schedule name {name!r} is already used at {first}",
                )
        _check_spec(checker, trigger, path, now)
        timezone = trigger.get("timezone", "UTC")
        if isinstance(timezone, str) and timezone and not timezone_known(timezone):
            checker.add(
                f"{path}.timezone",
                DEFINITION_SCHEDULE_TIMEZONE_UNKNOWN,
                f"unknown timezone {timezone!r} (an IANA name such as Europe/Paris)",
            )
        checker.expr_map(trigger.get("input"), f"{path}.input")


def _check_spec(checker: Checker, trigger: dict[str, Any], path: str, now: datetime) -> None:
    given = [f for f in SPEC_FIELDS if trigger.get(f) is not None]
    if len(given) != 1:
        checker.add(
            path,
            DEFINITION_SCHEDULE_SPEC,
            "a schedule has exactly one of cron, interval_ms and at"
            + (f" (got {', '.join(given)})" if given else ""),
        )
    cron = trigger.get("cron")
    if isinstance(cron, str) and cron:
        why = cron_problem(cron)
        if why is not None:
            checker.add(f"{path}.cron", DEFINITION_SCHEDULE_CRON_INVALID, why)
    at = trigger.get("at")
    if isinstance(at, str) and at:
        if not is_iso(at):
            checker.add(
                f"{path}.at",
                DEFINITION_FIELD_INVALID,
                "at is an ISO-8601 time with an offset (e.g. 2030-01-01T02:00:00Z)",
            )
        elif datetime.fromisoformat(at) <= now:
            checker.add(f"{path}.at", DEFINITION_SCHEDULE_AT_PAST, f"{at} is in the past")
