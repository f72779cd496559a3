"""asyncio helpers: wait until a check holds; run a coroutine for the length of a block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


async def eventually(check: Any, timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll the async ``check`` until it returns something truthy; fail after ``timeout``."""
    import asyncio

    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(every)
    return result


@asynccontextmanager
async def running(coroutine: Any) -> AsyncIterator[Any]:
    """Run ``coroutine`` as a task for the block; cancel it (and wait) afterwards."""
    import asyncio
    import contextlib

    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
