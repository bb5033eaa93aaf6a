"""The built-in actions as the worker runs them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flowledger.settings import Settings
from topics.publisher import Published
from workflows.actions import builtins
from workflows.actions.spec import ActionContext


async def test_core_emit_event_does_not_block_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def slow_publish(*args: Any, **kwargs: Any) -> list[Published]:
        time.sleep(0.3)  # a broker slow to acknowledge
        return [Published(line=1, event_id="e", partition=0, offset=7)]

    monkeypatch.setattr(builtins, "publish", slow_publish)
    context = ActionContext(Settings(), "r1", "acme", "root.steps[0]", "", "k", 1)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.ensure_future(tick())
    out = await builtins._emit(builtins.EmitInput(event_type="t"), context)
    ticker.cancel()
    assert out.model_dump()["offset"] == 7
    assert ticks >= 10
