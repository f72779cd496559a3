"""Live progress of a set: server-sent events from ``/sets/{id}/events``.

bot/web/static/members.js opens the stream on a set's page while the set is waiting or
being drawn; each event comes from the database's notifications, fanned out to the
pages by :class:`~bot.web.events.EventHub`. The stream says where the set stands when it
opens, every step while it is drawn, and its end, after which it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bot.db.models import GenerationStatus
from bot.domain import Refusal
from bot.notify import GenerationEvent, ProgressEvent
from bot.service import CollectionService
from bot.web.events import EventHub
from bot.web.forms import service_of
from bot.web.members import WAITING, set_id
from bot.web.security import require_member

CONNECT_WAIT_SECONDS = 5.0  # a progress stream waits this long at most for the listener
KEEPALIVE_SECONDS = 15.0  # a comment line on an idle progress stream (proxies close silent ones)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


RUNNING = _sse("running", {})


async def _now(service: CollectionService, hub: EventHub, generation_id: int) -> tuple[str, bool]:
    """The set's state as an event, and whether it is final (done, failed or gone); a
    running set's latest step when the hub heard one."""
    try:
        view = await service.get_generation(generation_id)
    except Refusal:
        return _sse("done", {"status": "gone"}), True
    if view.status not in WAITING:
        return _sse("done", {"status": view.status.value}), True
    if view.status == GenerationStatus.queued:
        return _sse("queued", {"position": await service.queue_position(generation_id)}), False
    latest = hub.latest_progress(generation_id)
    if latest is not None:
        return _sse("progress", {"step": latest.step, "total": latest.total}), False
    return RUNNING, False


async def set_events(request: Request) -> Response:
    """Server-sent events of one set: ``queued`` {position}, ``running``, ``progress``
    {step, total}, then ``done`` {status} (done, failed or gone), after which it ends.

    It subscribes before it reads the set's state, so an end in between is not missed (a
    set still waiting is read again once the listener is connected, waiting up to
    :data:`CONNECT_WAIT_SECONDS` for it); it looks again when the listener reconnects and at
    every keepalive (every :data:`KEEPALIVE_SECONDS`). It ends when the client goes
    (Starlette cancels it) or the server stops.
    """
    require_member(request)
    generation_id = set_id(request)
    service = service_of(request)
    hub: EventHub = request.app.state.events
    stopping: asyncio.Event = request.app.state.stopping

    async def stream() -> AsyncIterator[str]:
        async with hub.subscribe(generation_id) as queue:
            yield "retry: 3000\n\n"
            last, final = await _now(service, hub, generation_id)
            if not final and not hub.connected.is_set():
                # Right after the server started its listener may not be connected yet: wait
                # a little, so that the first steps are not missed (an end would not be: the
                # listener's connect makes every stream look again).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hub.connected.wait(), CONNECT_WAIT_SECONDS)
                last, final = await _now(service, hub, generation_id)
            yield last
            if final:
                return
            stop = asyncio.ensure_future(stopping.wait())
            get: asyncio.Future[Any] | None = None
            try:
                while True:
                    if get is None:
                        get = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {get, stop}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                    )
                    if stop in done:
                        return
                    if get not in done:  # quiet: keep the connection, and look again
                        yield ": keepalive\n\n"
                        event: Any = None
                    else:
                        event, get = get.result(), None
                    if isinstance(event, ProgressEvent):
                        last = _sse("progress", {"step": event.step, "total": event.total})
                        yield last
                    elif isinstance(event, GenerationEvent):
                        yield _sse("done", {"status": event.status})
                        return
                    else:  # a keepalive, or the listener reconnected: look at the row
                        now, final = await _now(service, hub, generation_id)
                        if final:
                            yield now
                            return
                        # "running" says less than the step a progress event showed
                        if now != last and not (
                            now == RUNNING and last.startswith("event: progress")
                        ):
                            yield now
                            last = now
            finally:
                for waiting in (get, stop):
                    if waiting is not None:
                        waiting.cancel()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


routes: list[BaseRoute] = [
    Route("/sets/{id}/events", set_events, name="set_events"),
]
