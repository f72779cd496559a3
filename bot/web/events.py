"""Live progress for the web: one LISTEN connection per web process, fanned out to pages.

The same notifications the Discord bot listens to (bot/notify.py): a worker's progress
and a generation's end. Each open progress stream (server-sent events) subscribes to
one generation; after a reconnect of the listener every subscriber is told to look
again, so an end that happened while the connection was down is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bot.notify import GenerationEvent, NotificationListener, ProgressEvent

LATEST_KEPT = 10_000  # sets whose latest step is remembered (the oldest are forgotten)


@dataclass(frozen=True)
class Recheck:
    """The listener (re)connected: events may have been missed, look at the row again."""


Event = GenerationEvent | ProgressEvent | Recheck


class EventHub:
    """Routes generation events to the streams that wait for them."""

    def __init__(self, database_url: str) -> None:
        self.listener = NotificationListener(
            database_url,
            on_generation=self._publish,
            on_progress=self._publish,
            on_connect=self._recheck,
        )
        self._streams: dict[int, set[asyncio.Queue[Event]]] = {}
        # The latest step of each set still being drawn, whoever watches it: a page opened
        # between two steps shows where the worker is (the row does not keep the step).
        self._latest: OrderedDict[int, ProgressEvent] = OrderedDict()

    @property
    def connected(self) -> asyncio.Event:
        return self.listener.connected

    async def run(self) -> None:
        """Listen until cancelled (reconnecting when the database goes away)."""
        await self.listener.run()

    @contextlib.asynccontextmanager
    async def subscribe(self, generation_id: int) -> AsyncIterator[asyncio.Queue[Event]]:
        """A queue of this generation's events while the context is open."""
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=256)
        self._streams.setdefault(generation_id, set()).add(queue)
        try:
            yield queue
        finally:
            streams = self._streams.get(generation_id)
            if streams is not None:
                streams.discard(queue)
                if not streams:
                    del self._streams[generation_id]

    def subscribers(self) -> int:
        return sum(len(queues) for queues in self._streams.values())

    def latest_progress(self, generation_id: int) -> ProgressEvent | None:
        """The last progress notice of a set still being drawn, if this process heard one."""
        return self._latest.get(generation_id)

    async def _publish(self, event: GenerationEvent | ProgressEvent) -> None:
        if isinstance(event, ProgressEvent):
            self._latest[event.generation_id] = event
            self._latest.move_to_end(event.generation_id)
            while len(self._latest) > LATEST_KEPT:
                self._latest.popitem(last=False)
        else:
            self._latest.pop(event.generation_id, None)
        for queue in tuple(self._streams.get(event.generation_id, ())):
            _offer(queue, event)

    async def _recheck(self) -> None:
        for queues in tuple(self._streams.values()):
            for queue in tuple(queues):
                _offer(queue, Recheck())


def _offer(queue: asyncio.Queue[Event], event: Event) -> None:
    """Queue an event; a stream too slow to keep up loses progress, never the end."""
    if queue.full() and isinstance(event, ProgressEvent):
        return
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(event)
