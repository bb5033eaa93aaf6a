"""A run's timeline as SVG: one bar per step and one per wait on a shared time axis,
coloured by status, each wait labelled with the event (or task) that resumed it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

COLOURS = {
    "SUCCEEDED": "#2e7d32",
    "COMPLETED": "#2e7d32",
    "RESOLVED": "#2e7d32",
    "RUNNING": "#1565c0",
    "OPEN": "#f9a825",
    "WAITING": "#f9a825",
    "FAILED": "#c62828",
    "TIMED_OUT": "#ef6c00",
    "CANCELED": "#757575",
    "TERMINATED": "#757575",
}
LABEL_W, BAR_AREA_W, ROW_H, TOP, AXIS_H = 300, 640, 26, 30, 30


@dataclass(frozen=True)
class Bar:
    kind: str  # "step" or "wait"
    label: str
    status: str
    start: datetime
    end: datetime | None  # None: still open
    note: str | None = None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def bars(document: dict[str, Any]) -> list[Bar]:
    out = []
    for step in document.get("steps", []):
        start = _time(step.get("started_at"))
        if start is None:
            continue
        out.append(
            Bar(
                "step",
                f"{step.get('step_path')} ({step.get('step_type')})",
                str(step.get("status")),
                start,
                _time(step.get("completed_at")),
            )
        )
    for wait in document.get("waits", []):
        start = _time(wait.get("created_at"))
        if start is None:
            continue
        what = wait.get("event_type") or wait.get("wait_type")
        if wait.get("matched_event_id"):
            note = f"resumed by event {wait['matched_event_id']}"
        elif wait.get("task_id") and wait.get("status") == "RESOLVED":
            note = f"resumed by task {wait['task_id']}"
        else:
            note = None
        out.append(
            Bar(
                "wait",
                f"wait {what}",
                str(wait.get("status")),
                start,
                _time(wait.get("resolved_at")),
                note,
            )
        )
    return sorted(out, key=lambda b: (b.start, b.kind))


def svg(document: dict[str, Any], now: datetime) -> str:
    items = bars(document)
    height = TOP + ROW_H * max(len(items), 1) + AXIS_H
    width = LABEL_W + BAR_AREA_W + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="run timeline">'
    ]
    if not items:
        parts.append(f'<text x="10" y="{TOP}">no steps yet</text></svg>')
        return "".join(parts)
    begin = min(b.start for b in items)
    finish = max((b.end or now) for b in items)
    span = max((finish - begin).total_seconds(), 0.001)

    def x(at: datetime) -> float:
        return LABEL_W + BAR_AREA_W * (at - begin).total_seconds() / span

    for row, bar in enumerate(items):
        y = TOP + row * ROW_H
        left, right = x(bar.start), x(bar.end or now)
        colour = COLOURS.get(bar.status, "#546e7a")
        title = f"{bar.label}: {bar.status}, {bar.start.isoformat()} to " + (
            bar.end.isoformat() if bar.end else "open"
        )
        if bar.note:
            title += f"; {bar.note}"
        parts.append(
            f'<text x="4" y="{y + 16}" font-size="12" font-family="sans-serif">'
            f"{escape(bar.label[:44])}</text>"
            f'<rect class="{bar.kind}-bar" data-status="{escape(bar.status)}" x="{left:.1f}" '
            f'y="{y + 4}" width="{max(right - left, 3):.1f}" height="{ROW_H - 8}" rx="3" '
            f'fill="{colour}"><title>{escape(title)}</title></rect>'
        )
        if bar.note:
            # Beside the bar where there is room, else inside its end, in white.
            inside = right + 230 > width
            at = right - 4 if inside else right + 4
            style = 'text-anchor="end" fill="#fff"' if inside else 'fill="#222"'
            parts.append(
                f'<text class="resumed-by" x="{at:.1f}" y="{y + 16}" {style} '
                f'font-size="10" font-family="sans-serif">{escape(bar.note)}</text>'
            )
    axis_y = TOP + ROW_H * len(items) + 8
    parts.append(
        f'<line x1="{LABEL_W}" y1="{axis_y}" x2="{LABEL_W + BAR_AREA_W}" y2="{axis_y}" '
        f'stroke="#333"/>'
    )
    for i in range(5):
        at_x = LABEL_W + BAR_AREA_W * i / 4
        seconds = span * i / 4
        parts.append(
            f'<line x1="{at_x:.1f}" y1="{axis_y}" x2="{at_x:.1f}" y2="{axis_y + 5}" stroke="#333"/>'
            f'<text x="{at_x:.1f}" y="{axis_y + 18}" font-size="10" text-anchor="middle" '
            f'font-family="sans-serif">+{seconds:.2f}s</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
