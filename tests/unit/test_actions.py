"""The built-in actions as the worker runs them."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from flowledger.settings import Settings
from topics.publisher import Published
from workflows.actions import builtins
from workflows.actions.spec import ActionContext


async def test_core_emit_event_does_not_block_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, released = threading.Event(), threading.Event()

    def slow_publish(*args: Any, **kwargs: Any) -> list[Published]:
        # A broker slow to acknowledge: it answers only once the event loop has run
        # the code below, which it cannot if publishing holds the loop.
        started.set()
        assert released.wait(10), "publishing blocked the event loop"
        return [Published(line=1, event_id="e", partition=0, offset=7)]

    monkeypatch.setattr(builtins, "publish", slow_publish)
    context = ActionContext(Settings(), "r1", "acme", "root.steps[0]", "", "k", 1)
    emitting = asyncio.ensure_future(builtins._emit(builtins.EmitInput(event_type="t"), context))
    assert await asyncio.to_thread(started.wait, 10)
    released.set()
    out = await emitting
    assert out.model_dump()["offset"] == 7
