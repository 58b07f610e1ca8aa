"""Waiting for asynchronous effects in tests: liveness bounds, never timing assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def poll(pred: Callable[[], object], timeout: float) -> bool:
    """Poll until `pred()` holds or `timeout` seconds pass; the last answer is returned."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(0.005)
    return bool(pred())


async def until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for a condition; fail the test if it never comes."""
    assert await poll(cond, timeout), "condition not reached in time"
