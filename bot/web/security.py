"""Who is signed in, and the guards every request passes: sessions, CSRF, CSP, rate limits.

- **Sessions** are Starlette's signed cookie (itsdangerous, HTTP-only, SameSite=Lax, Secure
  when the public URL is https). The cookie holds the member's id, display name, a CSRF
  token, whether a login link granted admin rights and when they signed in; nothing else.
  Starlette signs the cookie anew whenever the session changes, so its own age says little:
  :func:`viewer` ends a session ``web.session_hours`` after the sign-in. A visitor who is
  not signed in may hold a session with a CSRF token alone (a login link's confirm page).
- **Admin rights** are checked on every request against the settings (the same lists
  ``/admin`` reads), except where an admin login link granted them (``prefloop web
  login-link``: whoever may run that command on the server is an admin already).
- **CSRF**: every POST goes through :func:`post`, which refuses a request whose form field
  ``csrf`` (or header ``X-CSRF-Token``) is not the session's token, or whose ``Origin`` is
  another site's; before it reads the body it refuses a session without a token (403), a
  multipart upload (415, no form here uploads files) and a body over
  :data:`MAX_POST_BYTES` (413). :func:`create_app` refuses to build an app with a POST
  route that skipped it.
- **CSP**: a strict Content-Security-Policy on every answer (scripts and styles from this
  origin only, no inline script, no framing).
- **Login links**: signed, short-lived and single-use (the audit log remembers the used ones);
  opening one shows a page whose button signs in (a link previewer only opens it).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.config import Settings
from bot.domain import Refusal, UserRef
from bot.export.privacy import load_secret

SESSION_KEY_FILE = "web_session.key"
LOGIN_LINK_MINUTES = 15
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_POST_BYTES = 64 * 1024  # every form here is a few fields


class Forbidden(Exception):
    """The viewer may not do this (403): not an admin, a bad CSRF token, a foreign origin."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotSignedIn(Exception):
    """The page needs a signed-in member: the answer is the sign-in page (or 401 for APIs)."""


class TooManyAttempts(Exception):
    """Sign-in attempts from one address beyond the limit (429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many sign-in attempts; try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Viewer:
    """The signed-in member as a page sees them."""

    member: UserRef
    name: str
    admin: bool
    csrf: str


def session_key(settings: Settings) -> str:
    """The key that signs cookies and login links (configured, or kept in the data folder)."""
    configured = settings.web.session_secret
    key = load_secret(
        settings.data_dir,
        configured.get_secret_value() if configured else None,
        filename=SESSION_KEY_FILE,
    )
    return key.decode()


def public_url(settings: Settings, port: int | None = None) -> str:
    """Where members reach the page, without a trailing slash."""
    if settings.web.public_url:
        return settings.web.public_url.rstrip("/")
    return f"http://{settings.web.host}:{settings.web.port if port is None else port}"


def is_configured_admin(settings: Settings, member: UserRef) -> bool:
    """The same admins as ``/admin`` (Discord user ids), plus ``web.admins``."""
    if str(member) in settings.web.admins:
        return True
    if member.frontend.value == "discord" and member.external_id.isdigit():
        return int(member.external_id) in settings.discord.admin_user_ids
    return False


def sign_in(request: Request, member: UserRef, name: str, *, admin_grant: bool = False) -> None:
    """Start a fresh session for ``member`` (a new CSRF token; nothing of the old one kept)."""
    request.session.clear()
    request.session.update(
        {
            "member": str(member),
            "name": name,
            "csrf": secrets.token_urlsafe(32),
            "admin_grant": admin_grant,
            "since": int(time.time()),
        }
    )


def anonymous_csrf(request: Request) -> str:
    """The CSRF token of a visitor who is not signed in (made now if the session has none),
    for a form they post before signing in (a login link's confirm page)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def viewer(request: Request) -> Viewer | None:
    """The signed-in member, or None. A session older than ``web.session_hours`` (counted
    from its sign-in) is over: it is cleared, and the member signs in again."""
    session = request.session
    ref = session.get("member")
    if not ref or not session.get("csrf"):
        return None  # nobody, or a visitor with only a CSRF token
    settings: Settings = request.app.state.settings
    since = session.get("since")
    age = time.time() - since if isinstance(since, int | float) else None
    if age is None or age > settings.web.session_hours * 3600:
        session.clear()
        return None
    try:
        member = UserRef.parse(ref)
    except Refusal:
        return None
    admin = bool(session.get("admin_grant")) or is_configured_admin(settings, member)
    return Viewer(member, str(session.get("name") or ref), admin, str(session["csrf"]))


def require_member(request: Request) -> Viewer:
    """The signed-in member; :class:`NotSignedIn` otherwise."""
    found = viewer(request)
    if found is None:
        raise NotSignedIn()
    return found


async def require_admin(request: Request, action: str, target: str | None = None) -> Viewer:
    """The signed-in admin; a refused attempt is audited, like ``/admin``'s, and answered 403."""
    found = require_member(request)
    if not found.admin:
        service = request.app.state.platform.service
        await service.audit(found.member, f"web:{action}", target=target, allowed=False)
        raise Forbidden("Only prefloop admins may open this page.")
    return found


# ----- CSRF ---------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


def post(endpoint: Callable[[Request, FormData], Awaitable[Response]]) -> Endpoint:
    """A POST endpoint behind the CSRF check; it receives the parsed form.

    The token comes in the form's ``csrf`` field or the ``X-CSRF-Token`` header (fetch);
    it must equal the session's. A POST from another origin is refused as well. Nothing
    is read of the body before the cheap checks: a session without a token is refused at
    once (403), a multipart upload (415), a body over :data:`MAX_POST_BYTES` (413).
    """

    async def checked(request: Request) -> Response:
        check_origin(request)
        expected = request.session.get("csrf")
        if not isinstance(expected, str) or not expected:
            raise Forbidden(EXPIRED)
        form = await read_form(request)
        token = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), expected.encode()):
            raise Forbidden(EXPIRED)
        return await endpoint(request, form)

    checked.csrf_checked = True  # type: ignore[attr-defined]  # create_app looks for it
    checked.__name__ = getattr(endpoint, "__name__", "post")
    checked.__doc__ = endpoint.__doc__
    return checked


EXPIRED = "This form has expired or did not come from this site: reload the page."
TOO_LARGE = f"This form is larger than {MAX_POST_BYTES // 1024} KiB: nothing here takes that much."


async def read_form(request: Request) -> FormData:
    """The posted form, read no further than :data:`MAX_POST_BYTES` (413 beyond, 415 for
    a multipart upload: no form here uploads files)."""
    kind = request.headers.get("content-type", "").lower()
    if kind.startswith("multipart/"):
        raise HTTPException(415, "This page takes no file uploads: send the form as it is.")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            raise HTTPException(400, "This request's Content-Length is not a number.")
        if int(declared) > MAX_POST_BYTES:
            raise HTTPException(413, TOO_LARGE)
    body = bytearray()
    async for chunk in request.stream():  # bounded, whatever Content-Length said
        body += chunk
        if len(body) > MAX_POST_BYTES:
            raise HTTPException(413, TOO_LARGE)
    request._body = bytes(body)  # what request.form() parses (Starlette's own cache)
    return await request.form()


def check_origin(request: Request) -> None:
    """Refuse a request whose ``Origin`` header names another site (browsers send it on
    every cross-site POST; a request without one is checked by its token alone)."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = urlsplit(request.app.state.public_url).netloc
    if urlsplit(origin).netloc not in (request.url.netloc, own):
        raise Forbidden("This request came from another site.")


# ----- login links ----------------------------------------------------------------------


def _links(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(session_key(settings), salt="prefloop-login-link")


def make_login_token(settings: Settings, member: UserRef, *, admin: bool) -> tuple[str, str]:
    """A signed login token for ``member`` and its single-use nonce."""
    nonce = secrets.token_urlsafe(16)
    token = _links(settings).dumps({"member": str(member), "admin": admin, "nonce": nonce})
    return token, nonce


def read_login_token(settings: Settings, token: str) -> dict[str, Any]:
    """The token's contents; :class:`Forbidden` when forged or older than its lifetime."""
    try:
        data = _links(settings).loads(token, max_age=LOGIN_LINK_MINUTES * 60)
    except SignatureExpired:
        raise Forbidden(
            f"This login link is older than {LOGIN_LINK_MINUTES} minutes: ask for a new one "
            "(prefloop web login-link)."
        ) from None
    except BadSignature:
        raise Forbidden("This login link is not valid.") from None
    if not isinstance(data, dict) or not {"member", "admin", "nonce"} <= data.keys():
        raise Forbidden("This login link is not valid.")
    return data


# ----- rate limits ----------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (an address), in memory."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._seen: dict[str, deque[float]] = {}

    def hit(self, key: str) -> None:
        """Count one attempt; :class:`TooManyAttempts` beyond the limit."""
        now = time.monotonic()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if len(seen) >= self.limit:
            raise TooManyAttempts(int(seen[0] + self.window - now) + 1)
        seen.append(now)
        if len(self._seen) > 10_000:  # forget idle addresses
            for stale in [k for k, v in self._seen.items() if not v or v[-1] <= now - self.window]:
                del self._seen[stale]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# ----- headers --------------------------------------------------------------------------


def content_security_policy(image_sources: str = "") -> str:
    """Scripts, styles, images and connections from this origin only; no framing."""
    images = " ".join(part for part in ("'self'", "data:", image_sources) if part)
    return (
        "default-src 'none'; "
        "script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; font-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


ERROR_LOGGED = "prefloop.error_logged"  # scope key: the app's error handler logged it


class SecurityHeaders:
    """ASGI middleware adding the CSP and its companions to every HTTP answer. Outside
    everything else, it also takes back an error the app's own handler has logged and
    answered already (Starlette raises it on for the server to log: a second traceback)."""

    def __init__(self, app: ASGIApp, *, image_sources: str = "") -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", content_security_policy(image_sources).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *self.headers]
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception:
            if not scope.get(ERROR_LOGGED):
                raise
