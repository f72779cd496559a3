"""The web page for tests: served by the real uvicorn on a free loopback port, and clients
signed in through a login link (the Discord sign-in has tests of its own)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from bot.domain import UserRef
from bot.web.security import make_login_token
from bot.web.server import serve_web
from tests.support.aio import running


@asynccontextmanager
async def web_running(platform: Any, *, hub: bool = True) -> AsyncIterator[str]:
    """Serve ``platform``'s web page on 127.0.0.1 (a free port) while open; its base URL."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_ready(url: str) -> None:
        if not ready.done():
            ready.set_result(url)

    server = serve_web(platform, host="127.0.0.1", port=0, on_ready=on_ready, hub=hub)
    async with running(server) as task:
        done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            task.result()  # it stopped before it listened: raise its error
            raise RuntimeError("the web server stopped before it listened")
        yield ready.result()


def login_url(base: str, platform: Any, member: str, *, admin: bool = False) -> str:
    """A one-time login link for ``member`` (``cli:alice``, ``discord:123``)."""
    token, _ = make_login_token(platform.settings, UserRef.parse(member), admin=admin)
    return f"{base}/login/link?token={token}"


@asynccontextmanager
async def signed_in(
    base: str, platform: Any, member: str, *, admin: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with ``member``'s session cookie (it follows no redirects)."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        answer = await client.get(login_url(base, platform, member, admin=admin))
        assert answer.status_code == 303, answer.text
        yield client


async def csrf_of(client: httpx.AsyncClient, path: str = "/") -> str:
    """The CSRF token a page carries for its forms."""
    page = await client.get(path)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, f"no CSRF token on {path}: {page.status_code} {page.text[:300]}"
    return found.group(1)
