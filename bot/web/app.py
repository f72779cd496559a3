"""The web front end's ASGI app: the routes of the sign-in, members' and admins' modules.

Built once per process from an open :class:`~bot.runtime.Platform`, like the Discord bot:
every page calls the same :class:`~bot.service.CollectionService` (no second copy of a
rule). Images are served from the store with long cache lifetimes (their keys are
content hashes), or by a short-lived signed URL when the store is S3; only the images a
set's page shows members (an image row the safety filter did not withhold), by their
content key. The security headers wrap everything, error pages included; an unexpected
error is logged and answered with a page that says so (500).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from bot.domain import Refusal
from bot.picks.mine import image_shown
from bot.runtime import Platform
from bot.storage import StorageError
from bot.web import admin, admin_exports, admin_runs, auth, members, mydata, progress
from bot.web.events import EventHub
from bot.web.forms import NoSuch
from bot.web.pages import HERE, problem, sign_in_redirect
from bot.web.security import (
    ERROR_LOGGED,
    Forbidden,
    NotSignedIn,
    RateLimiter,
    SecurityHeaders,
    TooManyAttempts,
    public_url,
    require_member,
    session_key,
)

log = logging.getLogger(__name__)

SESSION_COOKIE = "prefloop_session"
IMAGE_CACHE = "private, max-age=31536000, immutable"  # keys are content hashes
# The store's content keys (bot/storage.py content_key): images/ab/cd/<sha256>.<type>.
IMAGE_KEY = re.compile(r"images/([0-9a-f]{2})/([0-9a-f]{2})/\1\2[0-9a-f]{60}\.[a-z0-9]{1,8}")
NO_IMAGE = "No such image."
CRASHED = "Something went wrong on our side; it is in the server's log."


class WebApp(Starlette):
    """Starlette with the security headers outside everything else: every answer carries
    them, the error pages of its outermost layer too."""

    def __init__(self, *args: Any, image_sources: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image_sources = image_sources

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(), image_sources=self.image_sources)


def create_app(platform: Platform, *, port: int | None = None, hub: bool = True) -> Starlette:
    """The app for ``platform``; ``port`` is the bound port when the settings say 0.

    ``hub``: listen for progress notifications (off in tests that need no live progress).
    """
    settings = platform.settings
    url = public_url(settings, port)
    routes: list[BaseRoute] = [
        *auth.routes,
        *members.routes,
        *progress.routes,
        *mydata.routes,
        *admin.routes,
        *admin_runs.routes,
        *admin_exports.routes,
        admin.fallback,  # after every other /admin route: it takes any /admin address
        Route("/images/{key:path}", image, name="image"),
        Route("/favicon.ico", favicon),  # what browsers ask for on pages without a link
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    unchecked = [
        r.path
        for r in routes
        if isinstance(r, Route)
        and "POST" in (r.methods or ())
        and not getattr(r.endpoint, "csrf_checked", False)
    ]
    if unchecked:  # every POST goes through security.post
        raise RuntimeError(f"POST routes without the CSRF check: {unchecked}")

    events = EventHub(platform.database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(events.run()) if hub else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = WebApp(
        routes=routes,
        image_sources=_image_sources(platform),
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=session_key(settings),
                session_cookie=SESSION_COOKIE,
                max_age=int(settings.web.session_hours * 3600),
                same_site="lax",
                https_only=url.startswith("https://"),
            ),
        ],
        exception_handlers={
            Exception: _crashed,  # Starlette's outermost layer: anything not handled below
            NoSuch: _no_such,
            Forbidden: _forbidden,
            NotSignedIn: _not_signed_in,
            TooManyAttempts: _too_many,
            Refusal: _refused,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )
    app.state.platform = platform
    app.state.settings = settings
    app.state.public_url = url
    app.state.events = events
    app.state.stopping = asyncio.Event()  # set by serve_web: open event streams end at once
    app.state.login_limiter = RateLimiter(settings.web.login_attempts_per_minute)
    return app


async def image(request: Request) -> Response:
    """An image of the store, for signed-in members (a signed URL when the store is S3):
    only a content key of an image row that members are shown (not withheld)."""
    require_member(request)
    platform: Platform = request.app.state.platform
    key = request.path_params["key"]
    if not IMAGE_KEY.fullmatch(key) or not await image_shown(platform.sessions, key):
        return problem(request, NO_IMAGE, 404)
    try:
        path = platform.storage.local_path(key)
    except StorageError:
        return problem(request, NO_IMAGE, 404)
    if path is not None:
        if not path.is_file():
            return problem(request, "This image is gone (its member asked to be forgotten?).", 404)
        return FileResponse(path, headers={"Cache-Control": IMAGE_CACHE})
    signed = getattr(platform.storage, "signed_url", None)
    if signed is None:
        return problem(request, "This store cannot serve images.", 404)
    try:
        return RedirectResponse(await signed(key), status_code=302)
    except StorageError as error:
        return problem(request, str(error), 502)


async def favicon(request: Request) -> Response:
    return RedirectResponse("/static/favicon.svg", status_code=301)


def _image_sources(platform: Platform) -> str:
    """Where images may come from besides this origin: the S3 endpoint, when images are there."""
    endpoint = getattr(platform.storage, "public_origin", None)
    return str(endpoint) if endpoint else ""


async def _crashed(request: Request, error: Exception) -> Response:
    """A bug or an outage: logged with its traceback, and a page that says so (500)."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    request.scope[ERROR_LOGGED] = True  # logged: SecurityHeaders keeps it from uvicorn
    try:
        return problem(request, CRASHED, 500)
    except Exception:  # the page itself cannot be drawn (no session yet?): plain words
        log.exception("the error page could not be drawn either")
        return Response(CRASHED, status_code=500, media_type="text/plain; charset=utf-8")


async def _no_such(request: Request, error: Exception) -> Response:
    assert isinstance(error, NoSuch)
    return problem(request, error.message, 404)


async def _forbidden(request: Request, error: Exception) -> Response:
    assert isinstance(error, Forbidden)
    return problem(request, error.message, 403)


async def _not_signed_in(request: Request, error: Exception) -> Response:
    return sign_in_redirect(request)


async def _too_many(request: Request, error: Exception) -> Response:
    assert isinstance(error, TooManyAttempts)
    response = problem(request, str(error).capitalize() + ".", 429)
    response.headers["Retry-After"] = str(error.retry_after)
    return response


async def _refused(request: Request, error: Exception) -> Response:
    assert isinstance(error, Refusal)
    extra: dict[str, Any] = {"code": error.code}
    return problem(request, error.message, 409 if error.code == "queue_full" else 400, **extra)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    messages = {404: "There is no such page.", 405: "This page does not take that request."}
    message = messages.get(error.status_code) or str(error.detail)
    return problem(request, message, error.status_code)
