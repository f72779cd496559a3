"""Signing in and out: "Sign in with Discord" (OAuth2 code flow with PKCE) and login links.

A member signed in with Discord is ``discord:<their id>``: the same member as on the bot,
with the same bans, limits and picks. A login link (``prefloop web login-link``) signs in
whoever the shell user names, as an admin unless asked otherwise; it works once, for
:data:`~bot.web.security.LOGIN_LINK_MINUTES` minutes.
"""

from __future__ import annotations

from sqlalchemy import func, select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.db.models import AdminAction
from bot.domain import UserRef
from bot.runtime import Platform
from bot.web.pages import page, safe_next
from bot.web.security import (
    Forbidden,
    client_address,
    post,
    read_login_token,
    sign_in,
)

LINK_ACTION = "web:login-link"


async def login_page(request: Request) -> Response:
    """The sign-in page: "Sign in with Discord" when an OAuth client is configured."""
    settings = request.app.state.settings
    return page(
        request,
        "login.html",
        title="Sign in",
        discord=bool(settings.web.discord_client_id),
    )


async def login_link(request: Request) -> Response:
    """``/login/link?token=…``: sign in as the link says, once."""
    request.app.state.login_limiter.hit(client_address(request))
    platform: Platform = request.app.state.platform
    data = read_login_token(platform.settings, request.query_params.get("token", ""))
    member = UserRef.parse(data["member"])
    async with platform.sessions.begin() as session:
        # Two uses of one link at once: the second waits here, then finds the first's row.
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(data["nonce"]))))
        used = await session.scalar(
            select(AdminAction.id).where(
                AdminAction.action == LINK_ACTION, AdminAction.target == data["nonce"]
            )
        )
        if used is not None:
            raise Forbidden("This login link was used already: ask for a new one.")
        session.add(
            AdminAction(
                actor=str(member),
                action=LINK_ACTION,
                target=data["nonce"],
                details={"admin": bool(data["admin"]), "address": client_address(request)},
                allowed=True,
            )
        )
    sign_in(request, member, member.external_id, admin_grant=bool(data["admin"]))
    return _signed_in(request)


async def logout(request: Request, form: FormData) -> Response:
    """Sign out (a POST, so another site cannot sign a member out)."""
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _signed_in(request: Request) -> Response:
    """After signing in: back to the page that asked for it."""
    response = RedirectResponse(safe_next(request.cookies.get("prefloop_next")), status_code=303)
    response.delete_cookie("prefloop_next")
    return response


routes: list[BaseRoute] = [
    Route("/login", login_page, name="login"),
    Route("/login/link", login_link, name="login_link"),
    Route("/logout", post(logout), methods=["POST"], name="logout"),
]
