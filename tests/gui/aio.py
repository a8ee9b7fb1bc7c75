"""Run coroutines on a qasync loop inside pytest-qt's QApplication, with generous deadlines."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Awaitable, Callable

import qasync


def new_loop(qapp) -> qasync.QEventLoop:
    loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(loop)
    return loop


async def wait_until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `pred` until truthy (protocol-level deadline, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def run(loop: qasync.QEventLoop, coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def running(bridge: Any) -> AsyncIterator[Any]:
    """Run a meshgui Bridge for the block; stop it after and wait (10 s at most) for its run() to end."""
    task = asyncio.ensure_future(bridge.run())
    try:
        yield bridge
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 10)
