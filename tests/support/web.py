"""The web page for tests: served by the real uvicorn on a free loopback port, and clients
signed in through a login link (the Discord sign-in has tests of its own).

The clients ask for pages as a browser's navigation does (``Accept: text/html``): a page
that needs a signed-in member then sends them to the sign-in page (303), where a script's
request, an image's or an event stream's gets 401."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin

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


PAGE_HEADERS = {"Accept": "text/html"}  # what a browser's navigation asks for


def login_url(base: str, platform: Any, member: str, *, admin: bool = False) -> str:
    """A one-time login link for ``member`` (``cli:alice``, ``discord:123``), as
    ``prefloop web login-link`` prints it."""
    token, _ = make_login_token(platform.settings, UserRef.parse(member), admin=admin)
    return f"{base}/login/link?token={token}"


def hidden_field(page: str, name: str) -> str:
    """The value of the page's hidden input ``name``."""
    found = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden field {name!r} on the page: {page[:300]}"
    return html.unescape(found.group(1))


async def use_login_link(client: httpx.AsyncClient, link: str) -> httpx.Response:
    """Open a login link (a page that asks "Sign in as …?") and press its button: the
    answer of the POST that signs in."""
    confirm = await client.get(link)
    assert confirm.status_code == 200, confirm.text[:500]
    return await client.post(
        urljoin(link, "/login/link"),
        data={
            "csrf": hidden_field(confirm.text, "csrf"),
            "token": hidden_field(confirm.text, "token"),
        },
    )


@asynccontextmanager
async def signed_in(
    base: str, platform: Any, member: str, *, admin: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with ``member``'s session cookie (it follows no redirects)."""
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=PAGE_HEADERS) as client:
        answer = await use_login_link(client, login_url(base, platform, member, admin=admin))
        assert answer.status_code == 303, answer.text
        yield client


async def csrf_of(client: httpx.AsyncClient, path: str = "/") -> str:
    """The CSRF token a page carries for its forms."""
    page = await client.get(path)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, f"no CSRF token on {path}: {page.status_code} {page.text[:300]}"
    return found.group(1)
