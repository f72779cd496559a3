"""The fake Discord's OAuth2 (authorization code with PKCE), for "Sign in with Discord".

- ``GET {base_url}/oauth2/authorize``: the consent screen. It checks ``client_id``
  (``fake.oauth_client_id``), ``response_type=code``, ``redirect_uri`` (one of
  ``fake.oauth_redirect_uris``; None accepts any http(s) URL), a ``scope`` and PKCE
  (``code_challenge`` with ``code_challenge_method=S256``: the fake requires it). A bad
  request gets an HTML error page (never a redirect to an unchecked ``redirect_uri``).
  Otherwise it lists the guild's people as links ``a#authorize-USERID`` "Continue as NAME"
  and ``a#cancel`` "Cancel". The links are this URL plus ``user_id=ID`` (fake only: that
  person consents; 302 to ``redirect_uri?code=…&state=…``) or ``cancel=1`` (302 to
  ``redirect_uri?error=access_denied&error_description=…&state=…``). With
  ``fake.oauth_user_id`` set, the page consents for that person at once (like Discord for
  someone who authorized the app before).
- ``POST /api/v10/oauth2/token`` (form-encoded; no bot token): ``grant_type=
  authorization_code``, ``code``, ``redirect_uri``, ``code_verifier``, and the client's
  ``client_id``/``client_secret`` in the form or as HTTP Basic auth. Errors as Discord
  answers them: 400 ``{"error": "unsupported_grant_type"}``, 401 ``{"error":
  "invalid_client"}`` (wrong id, or wrong or missing secret while ``fake.oauth_client_secret``
  is not None), 400 ``{"error": "invalid_grant", "error_description": …}`` (an unknown,
  used or expired code, another ``redirect_uri``, a verifier whose base64url(sha256) is not
  the challenge). A code works once: presenting it uses it up, whatever the outcome.
  Success: ``{"access_token", "token_type": "Bearer", "expires_in", "refresh_token",
  "scope"}``.
- ``GET /api/v10/users/@me`` with ``Authorization: Bearer <access token>`` (scope
  ``identify``): that person's user object.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from tests.support.fake_discord.payloads import Reply
from tests.support.fake_discord.records import RecordedRequest
from tests.support.fake_discord.routing import ApiRequest, route

if TYPE_CHECKING:
    from tests.support.fake_discord.server import FakeDiscord

CODE_LIFETIME = 600.0  # seconds an authorization code may wait for its exchange
TOKEN_LIFETIME = 604_800  # a week, what Discord gives an access token
DENIED = "The resource owner or authorization server denied the request"


@dataclass
class Grant:
    """One authorization code: who consented, for which client, redirect and challenge."""

    user_id: int
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str
    expires_at: float
    used: bool = False


@dataclass
class AccessToken:
    """An access token the token endpoint gave out."""

    user_id: int
    scope: str
    expires_at: float


@dataclass
class OAuthState:
    """The codes and access tokens the fake gave out, by their strings."""

    grants: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, AccessToken] = field(default_factory=dict)

    def user_of(self, authorization: str, now: float) -> int | None:
        """The user an ``Authorization: Bearer …`` header names (scope identify), or None."""
        kind, _, value = authorization.partition(" ")
        token = self.tokens.get(value) if kind == "Bearer" else None
        if token is None or token.expires_at <= now or "identify" not in token.scope.split():
            return None
        return token.user_id


def challenge_of(verifier: str) -> str:
    """PKCE S256: base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def user_payload(fake: FakeDiscord, user_id: int) -> dict[str, Any]:
    """GET /users/@me for a person's access token (what scope identify shows)."""
    data = fake.guild.member(user_id).user_payload()
    data.update(flags=0, mfa_enabled=False, locale="en-US", premium_type=0)
    data.update(banner=None, accent_color=None, banner_color=None)
    return data


# ----- the consent screen -------------------------------------------------------------------


class ConsentPage:
    """The aiohttp handler of ``GET /oauth2/authorize``; ``record`` logs it in fake.requests."""

    def __init__(
        self, fake: FakeDiscord, record: Callable[[web.Request, str], RecordedRequest]
    ) -> None:
        self.fake = fake
        self.record = record

    async def handle(self, request: web.Request) -> web.Response:
        """Check the request, then consent (``user_id``/``oauth_user_id``), cancel or ask."""
        record = self.record(request, "/oauth2/authorize")
        response = self._answer(request)
        record.status = response.status
        self.fake.notify()
        return response

    def _answer(self, request: web.Request) -> web.Response:
        query = request.query
        problem = self._invalid(query)
        if problem is not None:
            return _page("Discord", f"<p id='oauth-error'>{html.escape(problem)}</p>", 400)
        redirect_uri, state = query["redirect_uri"], query.get("state")
        if query.get("cancel"):
            denied = {"error": "access_denied", "error_description": DENIED}
            return _redirect(redirect_uri, denied, state)
        chosen = query.get("user_id") or self.fake.oauth_user_id
        if chosen is not None:
            member = self.fake.guild.members.get(int(chosen)) if str(chosen).isdigit() else None
            if member is None or member.bot:
                return _page("Discord", "<p id='oauth-error'>No such person here.</p>", 400)
            code = secrets.token_urlsafe(24)
            self.fake.oauth.grants[code] = Grant(
                member.user_id,
                query["client_id"],
                redirect_uri,
                query["scope"],
                query["code_challenge"],
                self.fake.loop_time() + self.fake.oauth_code_lifetime,
            )
            return _redirect(redirect_uri, {"code": code}, state)
        return self._ask(query)

    def _invalid(self, query: Mapping[str, str]) -> str | None:
        if query.get("client_id") != self.fake.oauth_client_id:
            return "Invalid OAuth2 client_id."
        if query.get("response_type") != "code":
            return "Invalid response_type: this fake grants codes only."
        redirect_uri = query.get("redirect_uri", "")
        allowed = self.fake.oauth_redirect_uris
        known = redirect_uri in allowed if allowed is not None else redirect_uri != ""
        if not known or urlsplit(redirect_uri).scheme not in ("http", "https"):
            return "Invalid OAuth2 redirect_uri."
        if not query.get("scope", "").split():
            return "Invalid scope: none asked for."
        if not query.get("code_challenge") or query.get("code_challenge_method") != "S256":
            return "This fake requires PKCE: code_challenge with code_challenge_method=S256."
        return None

    def _ask(self, query: Mapping[str, str]) -> web.Response:
        people = [m for m in self.fake.guild.members.values() if not m.bot]
        links = "".join(
            f'<li><a id="authorize-{m.user_id}" class="authorize" '
            f'href="{html.escape(_here(query, user_id=str(m.user_id)))}">'
            f"Continue as {html.escape(m.name)}</a></li>"
            for m in people
        )
        body = (
            f"<h1>{html.escape(self.fake.bot_member.name)} wants to access your account</h1>"
            f"<p>It asks for: {html.escape(query['scope'])}</p><ul>{links}</ul>"
            f'<p><a id="cancel" href="{html.escape(_here(query, cancel="1"))}">Cancel</a></p>'
        )
        return _page("Discord | Authorize access to your account", body, 200)


def _here(query: Mapping[str, str], **extra: str) -> str:
    params = {k: v for k, v in query.items() if k not in ("user_id", "cancel")}
    return "/oauth2/authorize?" + urlencode({**params, **extra})


def _redirect(uri: str, params: dict[str, str], state: str | None) -> web.Response:
    if state is not None:
        params = {**params, "state": state}
    parts = urlsplit(uri)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return web.Response(status=302, headers={"Location": location})


def _page(title: str, body: str, status: int) -> web.Response:
    head = f'<head><title>{html.escape(title)}</title><link rel="icon" href="data:,"></head>'
    text = f"<!doctype html><html>{head}<body>{body}</body></html>"
    return web.Response(text=text, status=status, content_type="text/html")


# ----- the token endpoint -------------------------------------------------------------------


def _error(status: int, error: str, description: str | None = None) -> Reply:
    body = {"error": error}
    if description is not None:
        body["error_description"] = description
    return Reply(status, body)


@route("POST", r"/oauth2/token", auth=False)
def exchange_code(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """The authorization code grant with PKCE (see the module docstring for the checks)."""
    form = {k: str(v) for k, v in req.body.items()}
    if form.get("grant_type") != "authorization_code":
        return _error(400, "unsupported_grant_type")
    client_id, secret = _client(form, req.record.headers.get("Authorization", ""))
    if client_id != fake.oauth_client_id or (
        fake.oauth_client_secret is not None and secret != fake.oauth_client_secret
    ):
        return _error(401, "invalid_client")
    grant = fake.oauth.grants.get(form.get("code", ""))
    if grant is None or grant.used or grant.client_id != client_id:
        return _error(400, "invalid_grant", 'Invalid "code" in request.')
    grant.used = True
    if grant.expires_at <= fake.loop_time():
        return _error(400, "invalid_grant", 'Invalid "code" in request.')
    if form.get("redirect_uri") != grant.redirect_uri:
        return _error(400, "invalid_grant", 'Invalid "redirect_uri" in request.')
    if challenge_of(form.get("code_verifier", "")) != grant.challenge:
        return _error(400, "invalid_grant", 'Invalid "code_verifier" in request.')
    token = secrets.token_urlsafe(24)
    fake.oauth.tokens[token] = AccessToken(
        grant.user_id, grant.scope, fake.loop_time() + TOKEN_LIFETIME
    )
    answer = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME,
        "refresh_token": secrets.token_urlsafe(24),
        "scope": grant.scope,
    }
    return Reply(200, answer)


def _client(form: Mapping[str, str], authorization: str) -> tuple[str | None, str | None]:
    """The client id and secret: HTTP Basic auth, or the form's fields."""
    kind, _, value = authorization.partition(" ")
    if kind == "Basic":
        try:
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None, None
        return client_id, secret
    return form.get("client_id"), form.get("client_secret")
