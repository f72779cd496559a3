"""The members' pages: imagine, pick, rate others' sets, my data."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.web.pages import page
from bot.web.security import require_member


async def home(request: Request) -> Response:
    """The imagine page."""
    require_member(request)
    return page(request, "imagine.html", title="Imagine")


routes: list[BaseRoute] = [
    Route("/", home, name="home"),
]
