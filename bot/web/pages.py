"""Rendering: the Jinja templates (autoescaped), the page helper and the error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from bot.web.security import viewer

HERE = Path(__file__).parent
# Autoescaped everywhere: nothing a member typed reaches a page as markup.
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, enable_async=False
    )
)


def page(request: Request, template: str, *, status: int = 200, **context: Any) -> Response:
    """A full page: the template with the viewer, their CSRF token and the site's name."""
    who = viewer(request)
    return templates.TemplateResponse(
        request,
        template,
        {"viewer": who, "csrf": who.csrf if who else "", **context},
        status_code=status,
    )


def wants_json(request: Request) -> bool:
    """A fetch() from the page's script (it asks for JSON) rather than a navigation."""
    return "application/json" in request.headers.get("accept", "")


def problem(request: Request, message: str, status: int, **extra: Any) -> Response:
    """An error as JSON for scripts, or as a page for people."""
    if wants_json(request):
        return JSONResponse({"error": message, **extra}, status_code=status)
    return page(request, "error.html", status=status, message=message, code=status)


NEXT_COOKIE = "prefloop_next"  # the page to return to after signing in


def is_navigation(request: Request) -> bool:
    """A person opening a page (not a script, an image or an event stream asking)."""
    if request.headers.get("sec-fetch-mode") == "navigate":
        return True
    return "text/html" in request.headers.get("accept", "")


def sign_in_redirect(request: Request) -> Response:
    """Send a person who is not signed in to the sign-in page, back here afterwards; any
    other request (a script's, an image's, an event stream's) gets 401."""
    if wants_json(request):
        return JSONResponse({"error": "Sign in first."}, status_code=401)
    if not is_navigation(request):
        return problem(request, "Sign in first.", 401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse("/login", status_code=303)
    response.set_cookie(
        NEXT_COOKIE,
        target,
        max_age=600,
        httponly=True,
        samesite="lax",
        secure=request.app.state.public_url.startswith("https://"),
    )
    return response


def safe_next(target: str | None) -> str:
    """A local path to return to after sign-in (never another site): ``/`` for anything
    with a backslash, a control character, or a scheme or host of its own."""
    if (
        not target
        or not target.startswith("/")
        or "\\" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:  # "//evil.example/…"
        return "/"
    return target
