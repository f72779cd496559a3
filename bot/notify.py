"""Listening for finished generations and progress, without losing any while away.

A dedicated asyncpg connection LISTENs on prefloop's channels. After every (re)connect
it first subscribes, then calls ``on_connect`` so the consumer can catch up on what
finished while it was away (e.g. ``CollectionService.undelivered``). Events may
therefore arrive twice; consumers treat them idempotently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from bot.db.engine import libpq_url
from bot.db.queries import GENERATION_CHANNEL, PROGRESS_CHANNEL
from bot.domain import Refusal

if TYPE_CHECKING:
    from bot.domain import GenerationView
    from bot.service import CollectionService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationEvent:
    """A generation reached ``done`` or ``failed``."""

    generation_id: int
    status: str
    frontend: str


@dataclass(frozen=True)
class ProgressEvent:
    """A worker finished denoising step ``step`` of ``total`` (0 = started)."""

    generation_id: int
    step: int
    total: int
    frontend: str


class NotificationListener:
    """Calls async handlers for generation and progress events until cancelled."""

    def __init__(
        self,
        database_url: str,
        *,
        on_generation: Callable[[GenerationEvent], Awaitable[None]] | None = None,
        on_progress: Callable[[ProgressEvent], Awaitable[None]] | None = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        max_backoff: float = 30.0,
        keepalive: float = 30.0,
    ) -> None:
        self.url = libpq_url(database_url)
        self.on_generation = on_generation
        self.on_progress = on_progress
        self.on_connect = on_connect
        self.max_backoff = max_backoff
        self.keepalive = keepalive
        self.connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Listen forever, reconnecting with backoff when the database goes away."""
        backoff = 0.5
        while True:
            try:
                await self._listen_once()
                backoff = 0.5
            except Exception as error:
                log.warning("notification listener stopped (%r); retrying in %.1fs", error, backoff)
            finally:
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _listen_once(self) -> None:
        connection = await asyncpg.connect(self.url)
        closed = asyncio.Event()
        connection.add_termination_listener(lambda _conn: closed.set())
        try:
            if self.on_generation:
                await connection.add_listener(GENERATION_CHANNEL, self._dispatch)
            if self.on_progress:
                await connection.add_listener(PROGRESS_CHANNEL, self._dispatch)
            if self.on_connect:
                await self.on_connect()
            self.connected.set()
            while not closed.is_set():
                # A half-open TCP connection never reports closing: ping it now and then.
                try:
                    await asyncio.wait_for(closed.wait(), self.keepalive)
                except TimeoutError:
                    await asyncio.wait_for(connection.fetchval("SELECT 1"), 10)
        finally:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        data = json.loads(payload)
        if channel == GENERATION_CHANNEL and self.on_generation:
            event = GenerationEvent(int(data["id"]), data["status"], data["frontend"])
            self._spawn(self.on_generation(event))
        elif channel == PROGRESS_CHANNEL and self.on_progress:
            progress = ProgressEvent(
                int(data["id"]), int(data["step"]), int(data["total"]), data["frontend"]
            )
            self._spawn(self.on_progress(progress))

    async def drain(self) -> None:
        """Wait for the handlers already running to finish (bound it with asyncio.timeout)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception():
            log.error("notification handler failed", exc_info=task.exception())


async def wait_for_generation(
    service: CollectionService,
    database_url: str,
    generation_id: int,
    *,
    on_progress: Callable[[ProgressEvent], Awaitable[None]] | None = None,
) -> GenerationView:
    """Wait until a generation is done or failed; return it as the service shows it.

    Bound the wait with ``asyncio.timeout`` around the call.
    """
    finished = asyncio.Event()

    async def check() -> None:
        try:
            view = await service.get_generation(generation_id)
        except Refusal:  # deleted: the final get_generation below says so
            finished.set()
            return
        if view.status in ("done", "failed"):
            finished.set()

    async def on_generation(event: GenerationEvent) -> None:
        if event.generation_id == generation_id:
            finished.set()

    async def progress(event: ProgressEvent) -> None:
        if event.generation_id == generation_id and on_progress:
            await on_progress(event)

    listener = NotificationListener(
        database_url, on_generation=on_generation, on_progress=progress, on_connect=check
    )
    task = asyncio.create_task(listener.run())
    try:
        await finished.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return await service.get_generation(generation_id)
