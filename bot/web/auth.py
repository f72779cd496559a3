"""Signing in and out: "Sign in with Discord" (OAuth2 code flow with PKCE) and login links.

A member signed in with Discord is ``discord:<their id>``: the same member as on the bot,
with the same bans, limits and picks (and an admin when ``discord.admin_user_ids`` lists
them). A login link (``prefloop web login-link``) signs in whoever the shell user names, as
an admin unless asked otherwise; it works once, for
:data:`~bot.web.security.LOGIN_LINK_MINUTES` minutes. Opening it shows a page that asks
"Sign in as …?" and uses nothing up: its button POSTs the token (with a CSRF token the
page puts in the visitor's session), and that signs in. A link previewer (Discord, Slack,
a mail client) that opens the link neither uses it up nor signs itself in.

Sign in with Discord: ``/login/discord`` keeps a random ``state`` and a PKCE
``code_verifier`` in the session (not signed in yet) and sends the browser to Discord's
authorize page with the verifier's S256 challenge. Discord sends it back to
``/login/discord/callback?code&state``: the state must be the session's (else 403), the
code is exchanged for an access token (with the verifier, so a code caught on the way is
useless to anyone else), the token reads ``/users/@me``, and the member is signed in. The
state and verifier work once. Discord's URLs follow ``discord.api_base_url``, the bot's
setting (:func:`discord_endpoints`); outgoing requests use ``discord.proxy`` when set. A
sign-in counts once against the sign-in rate limit of the address (its start, which the
callback needs), like a login link's confirmation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.config import Settings
from bot.db.models import AdminAction, Frontend
from bot.domain import UserRef
from bot.runtime import Platform
from bot.web.forms import field
from bot.web.pages import NEXT_COOKIE, page, problem, safe_next
from bot.web.security import (
    Forbidden,
    anonymous_csrf,
    client_address,
    post,
    read_login_token,
    sign_in,
    viewer,
)

log = logging.getLogger(__name__)

LINK_ACTION = "web:login-link"
USED = "This login link was used already: ask for a new one."
OAUTH_SESSION_KEY = "discord_oauth"  # the pending sign-in's state and code_verifier
DISCORD_TIMEOUT = 15.0  # seconds for each request to Discord
NOT_CONFIGURED = (
    "Sign-in with Discord is not set up on this server (PREFLOOP_WEB__DISCORD_CLIENT_ID): "
    "ask an admin for a login link."
)


async def login_page(request: Request) -> Response:
    """The sign-in page: "Sign in with Discord" when an OAuth client is configured."""
    return _login(request)


def _login(request: Request, notice: str | None = None) -> Response:
    settings = request.app.state.settings
    return page(
        request,
        "login.html",
        title="Sign in",
        discord=bool(settings.web.discord_client_id),
        callback=_callback_url(request),
        notice=notice,
    )


# ----- Sign in with Discord --------------------------------------------------------------


@dataclass(frozen=True)
class DiscordEndpoints:
    """Where the OAuth2 code flow talks to Discord."""

    authorize: str  # the consent page the browser is sent to
    token: str  # exchanges a code for an access token (POST, form-encoded)
    me: str  # the signed-in person (GET, ``Authorization: Bearer <token>``)


def discord_endpoints(api_base_url: str) -> DiscordEndpoints:
    """Discord's OAuth2 URLs, from the same ``discord.api_base_url`` the bot uses.

    The token endpoint and the user are API routes (``{api}/oauth2/token``,
    ``{api}/users/@me``); the authorize page is the website's, at the API's origin:
    ``https://discord.com/api/v10`` gives ``https://discord.com/oauth2/authorize``. A test's
    fake Discord at ``http://127.0.0.1:PORT/api/v10`` serves all three.
    """
    api = api_base_url.rstrip("/")
    parts = urlsplit(api)
    return DiscordEndpoints(
        authorize=f"{parts.scheme}://{parts.netloc}/oauth2/authorize",
        token=f"{api}/oauth2/token",
        me=f"{api}/users/@me",
    )


def pkce_challenge(verifier: str) -> str:
    """PKCE S256: base64url(sha256(verifier)) without padding (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _callback_url(request: Request) -> str:
    return f"{request.app.state.public_url}/login/discord/callback"


async def login_discord(request: Request) -> Response:
    """``/login/discord``: off to Discord's consent page, with a fresh state and PKCE."""
    request.app.state.login_limiter.hit(client_address(request))
    settings: Settings = request.app.state.settings
    client_id = settings.web.discord_client_id
    if not client_id:
        return problem(request, NOT_CONFIGURED, 404)
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-]
    request.session[OAUTH_SESSION_KEY] = {"state": state, "verifier": verifier}
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "scope": "identify",
            "redirect_uri": _callback_url(request),
            "state": state,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    authorize = discord_endpoints(settings.discord.api_base_url).authorize
    return RedirectResponse(f"{authorize}?{query}", status_code=302)


async def discord_callback(request: Request) -> Response:
    """``/login/discord/callback``: Discord sends the browser back here with a code (no
    second count against the rate limit: only a state that ``/login/discord`` kept works)."""
    settings: Settings = request.app.state.settings
    if not settings.web.discord_client_id:
        return problem(request, NOT_CONFIGURED, 404)
    pending = request.session.get(OAUTH_SESSION_KEY)
    if not isinstance(pending, dict):
        pending = {}
    state = request.query_params.get("state", "")
    expected = pending.get("state")
    if (
        not state
        or not isinstance(expected, str)
        or not hmac.compare_digest(state.encode(), expected.encode())
    ):
        return problem(request, "This sign-in did not start here; try again.", 403)
    verifier = str(pending.get("verifier", ""))
    request.session.pop(OAUTH_SESSION_KEY)  # a state and its verifier work once
    error = request.query_params.get("error")
    if error == "access_denied":
        return _login(request, "Sign-in with Discord was cancelled.")
    if error:
        said = request.query_params.get("error_description") or error
        log.warning("Discord refused a sign-in: %s (%s)", error, said)
        return problem(request, f"Discord could not sign you in: {said}.", 502)
    code = request.query_params.get("code", "")
    if not code:
        return problem(request, "Discord sent no sign-in code; try again.", 400)
    try:
        user = await _discord_user(settings, code, _callback_url(request), verifier)
    except SignInFailed as failed:
        return problem(request, failed.message, failed.status)
    member = UserRef(Frontend.discord, user["id"])
    name = user.get("global_name") or user.get("username") or user["id"]
    sign_in(request, member, str(name))  # a fresh session: nothing of the pending one kept
    return _signed_in(request)


class SignInFailed(Exception):
    """Finishing a Discord sign-in failed: what to tell the person, and the status."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def _discord_user(
    settings: Settings, code: str, redirect_uri: str, verifier: str
) -> dict[str, Any]:
    """Exchange ``code`` for an access token and read the person it belongs to."""
    endpoints = discord_endpoints(settings.discord.api_base_url)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "client_id": settings.web.discord_client_id or "",
    }
    if settings.web.discord_client_secret is not None:
        form["client_secret"] = settings.web.discord_client_secret.get_secret_value()
    try:
        # trust_env=False: like the bot, only discord.proxy routes Discord traffic.
        client = httpx.AsyncClient(
            proxy=settings.discord.proxy,
            timeout=DISCORD_TIMEOUT,
            trust_env=False,
            headers={"Accept": "application/json", "User-Agent": "prefloop (web sign-in)"},
        )
    except ValueError as error:
        log.error("discord.proxy is not a usable proxy URL: %s", error)
        raise SignInFailed(
            "prefloop cannot reach Discord: its proxy setting is wrong. Tell an admin."
        ) from None
    try:
        async with client:
            answer = await client.post(endpoints.token, data=form)
            token = _token_of(answer)
            me = await client.get(endpoints.me, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as error:
        log.warning("Discord sign-in: %s %s", type(error).__name__, error)
        raise SignInFailed(
            "Discord could not be reached to finish signing you in; try again in a minute."
        ) from None
    user = _json(me)
    if me.status_code != 200 or not str(user.get("id", "")).isdigit():
        log.warning("Discord sign-in: GET /users/@me answered %s %s", me.status_code, user)
        raise SignInFailed(
            f"Discord answered {me.status_code} when asked who you are; try again in a minute."
        )
    return {**user, "id": str(user["id"])}


def _token_of(answer: httpx.Response) -> str:
    """The access token of the token endpoint's answer; :class:`SignInFailed` otherwise."""
    data = _json(answer)
    token = data.get("access_token")
    if answer.status_code == 200 and isinstance(token, str) and token:
        return token
    error = data.get("error")
    log.warning("Discord sign-in: the token endpoint answered %s %s", answer.status_code, error)
    if error == "invalid_grant":
        raise SignInFailed(
            "Discord did not accept this sign-in (it was used already or is too old): "
            "sign in again.",
            400,
        )
    if error == "invalid_client":
        raise SignInFailed(
            "Discord does not accept prefloop's client id or secret "
            "(web.discord_client_id, web.discord_client_secret). Tell an admin."
        )
    raise SignInFailed(
        f"Discord answered {answer.status_code} while signing you in; try again in a minute."
    )


def _json(answer: httpx.Response) -> dict[str, Any]:
    """A JSON object answer, or an empty dict (an HTML error page, a proxy's text …)."""
    try:
        data = answer.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def login_link(request: Request) -> Response:
    """``/login/link?token=…``: "Sign in as …?", a button that posts the token. Nothing is
    used up here (a link previewer opens links too); a forged, expired or used link says so."""
    platform: Platform = request.app.state.platform
    token = request.query_params.get("token", "")
    data = read_login_token(platform.settings, token)
    member = UserRef.parse(data["member"])
    async with platform.sessions() as session:
        if await _used(session, data["nonce"]):
            raise Forbidden(USED)
    viewer(request)  # a session past its time is cleared first
    return page(
        request,
        "login_link.html",
        title="Sign in",
        member=str(member),
        admin=bool(data["admin"]),
        token=token,
        csrf=anonymous_csrf(request),  # the visitor may not be signed in: a token of their own
    )


async def _used(session: AsyncSession, nonce: str) -> bool:
    found = await session.scalar(
        select(AdminAction.id).where(AdminAction.action == LINK_ACTION, AdminAction.target == nonce)
    )
    return found is not None


async def use_login_link(request: Request, form: FormData) -> Response:
    """``POST /login/link``: sign in as the link says, once (a fresh session)."""
    request.app.state.login_limiter.hit(client_address(request))
    platform: Platform = request.app.state.platform
    data = read_login_token(platform.settings, field(form, "token"))
    member = UserRef.parse(data["member"])
    async with platform.sessions.begin() as session:
        # Two uses of one link at once: the second waits here, then finds the first's row.
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(data["nonce"]))))
        if await _used(session, data["nonce"]):
            raise Forbidden(USED)
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
    response = RedirectResponse(safe_next(request.cookies.get(NEXT_COOKIE)), status_code=303)
    response.delete_cookie(
        NEXT_COOKIE,
        httponly=True,
        samesite="lax",
        secure=request.app.state.public_url.startswith("https://"),
    )
    return response


routes: list[BaseRoute] = [
    Route("/login", login_page, name="login"),
    Route("/login/link", login_link, name="login_link"),
    Route("/login/link", post(use_login_link), methods=["POST"], name="use_login_link"),
    Route("/login/discord", login_discord, name="login_discord"),
    Route("/login/discord/callback", discord_callback, name="login_discord_callback"),
    Route("/logout", post(logout), methods=["POST"], name="logout"),
]
