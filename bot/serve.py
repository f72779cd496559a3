"""`prefloop run` and `prefloop worker`: the long-running parts, stopped cleanly by a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from bot.config import Settings
from bot.jobs.maintenance import serve_maintenance
from bot.jobs.worker import serve_worker
from bot.notify import GenerationEvent, NotificationListener
from bot.runtime import Platform, open_platform

log = logging.getLogger(__name__)


async def serve(settings: Settings, *, worker: bool, listener: bool, discord: bool = False) -> None:
    """Run the chosen parts on one platform until SIGINT/SIGTERM or until one of them fails.

    ``listener`` marks the main process (`prefloop run`): it also applies migrations.
    """
    async with open_platform(settings, upgrade=True if listener else None) as platform:
        parts: list[Coroutine[Any, Any, None]] = []
        if worker:
            parts.append(serve_worker(platform))
        if listener:
            parts.append(log_completions(platform))
            parts.append(serve_maintenance(platform))
        if discord:
            from bot.discord.client import run_bot  # the only place that loads discord.py

            parts.append(run_bot(platform))
        print(
            f"prefloop serving: generator {settings.generator.model}, "
            f"data in {settings.data_dir.resolve()}; Ctrl-C to stop",
            file=sys.stderr,
        )
        await until_signalled(*(asyncio.create_task(part) for part in parts))


async def log_completions(platform: Platform) -> None:
    """Log every finished generation (the Discord bot posts them besides)."""

    async def finished(event: GenerationEvent) -> None:
        log.info("generation #%s %s", event.generation_id, event.status)

    await NotificationListener(platform.database_url, on_generation=finished).run()


async def until_signalled(*tasks: asyncio.Task[Any]) -> None:
    """Wait for Ctrl-C/SIGTERM (or a task ending), then stop the tasks gracefully.

    A second Ctrl-C stops at once; jobs still running are then re-queued by another
    worker once this one's heartbeat is missed.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def first_signal() -> None:
        print("stopping: letting running jobs finish (Ctrl-C again to quit now)", file=sys.stderr)
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: os._exit(130))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first_signal)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for task, outcome in zip(tasks, outcomes, strict=True):
        if task in done and isinstance(outcome, Exception):
            raise outcome  # a part stopped on its own: say why
