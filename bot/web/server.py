"""Serving the web app with uvicorn inside the platform's event loop.

``prefloop run`` runs it beside the bot and the maintenance jobs; ``prefloop web`` alone.
Signals stay with :func:`bot.serve.until_signalled`: uvicorn's own handlers are not
installed, and cancelling :func:`serve_web` shuts the server down gracefully. Behind a
reverse proxy, ``web.forwarded_allow_ips`` names the proxies whose ``X-Forwarded-For`` and
``X-Forwarded-Proto`` are believed (uvicorn's ``forwarded_allow_ips``); unset, none are, and
every request comes from the address that connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator
from typing import Any

import uvicorn

from bot.runtime import Platform
from bot.web.app import create_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers, telling when it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the platform's until_signalled handles SIGINT/SIGTERM

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


async def serve_web(
    platform: Platform,
    *,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[str], Any] | None = None,
    hub: bool = True,
) -> None:
    """Serve until cancelled. ``on_ready(url)`` is called once the socket listens.

    Port 0 binds a free port; the URL passed to ``on_ready`` has the real one.
    """
    settings = platform.settings.web
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    # IPPROTO_TCP spelled out: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # sockets whose protocol says TCP, and a socket made with the default 0 does not; with
    # Nagle on, every answer after the first on a kept-alive connection waited ~40 ms for
    # the client's delayed ACK (bench/web.py, one member: page p50 51.9 ms before, 5.5 ms after).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(
            f"the web page cannot listen on {host}:{port} ({error.strerror}); set "
            "PREFLOOP_WEB__PORT to a free port, or PREFLOOP_WEB__ENABLED=false"
        ) from None
    bound = sock.getsockname()[1]
    app = create_app(platform, port=bound, hub=hub)
    url = app.state.public_url
    trusted = settings.forwarded_allow_ips  # None: no proxy's headers are believed
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=trusted is not None,
        forwarded_allow_ips=trusted,
        server_header=False,
        timeout_graceful_shutdown=5,
    )

    def started() -> None:
        log.info("web page at %s", url)
        if on_ready is not None:
            on_ready(url)

    server = _Server(config, started)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        app.state.stopping.set()  # end the progress streams (they would hold the shutdown)
        server.should_exit = True  # stop taking requests, let the open ones finish
        with contextlib.suppress(Exception):
            await task
        raise
    finally:
        sock.close()
