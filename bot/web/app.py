"""The web front end's ASGI app: the routes of the sign-in, members' and admins' modules.

Built once per process from an open :class:`~bot.runtime.Platform`, like the Discord bot:
every page calls the same :class:`~bot.service.CollectionService` (no second copy of a
rule). Images are served from the store with long cache lifetimes (their keys are
content hashes), or by a short-lived signed URL when the store is S3.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from bot.domain import Refusal
from bot.runtime import Platform
from bot.storage import StorageError
from bot.web import admin, admin_exports, admin_runs, auth, members, mydata, progress
from bot.web.events import EventHub
from bot.web.pages import HERE, problem, sign_in_redirect
from bot.web.security import (
    Forbidden,
    NotSignedIn,
    RateLimiter,
    SecurityHeaders,
    TooManyAttempts,
    public_url,
    require_member,
    session_key,
)

SESSION_COOKIE = "prefloop_session"
IMAGE_CACHE = "private, max-age=31536000, immutable"  # keys are content hashes


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

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders, image_sources=_image_sources(platform)),
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
    """An image of the store, for signed-in members (a signed URL when the store is S3)."""
    require_member(request)
    platform: Platform = request.app.state.platform
    key = request.path_params["key"]
    if ".." in key.split("/") or key.startswith("/"):
        return problem(request, "No such image.", 404)
    path = platform.storage.local_path(key)
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
