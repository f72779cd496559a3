"""Sign in with Discord against the fake Discord: the OAuth2 code flow with PKCE and state,
followed by hand with an HTTP client, through the real uvicorn."""

from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from itsdangerous import TimestampSigner
from pydantic import SecretStr
from starlette.routing import Route

from bot.config import DiscordSettings
from bot.db.models import Frontend
from bot.domain import UserRef
from bot.web import server
from bot.web.app import create_app
from bot.web.auth import discord_endpoints, pkce_challenge
from bot.web.security import session_key
from tests.support.database import count
from tests.support.fake_discord import FakeDiscord
from tests.support.web import (
    PAGE_HEADERS,
    csrf_of,
    hidden_field,
    login_url,
    use_login_link,
    web_running,
)

BOSS = 910_000_000_000_000_001
ALICE = 910_000_000_000_000_002
BOB = 910_000_000_000_000_003


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        server.add_member(BOSS, "boss")
        server.add_member(ALICE, "alice")
        server.add_member(BOB, "bob")
        yield server


@pytest.fixture
def discord_platform(platform: Any, fake: FakeDiscord) -> Any:
    """The platform with its Discord settings (the bot's) and OAuth client on the fake."""
    platform.settings.discord = DiscordSettings(api_base_url=fake.api_base, admin_user_ids=[BOSS])
    platform.settings.web.discord_client_id = fake.oauth_client_id
    assert fake.oauth_client_secret is not None
    platform.settings.web.discord_client_secret = SecretStr(fake.oauth_client_secret)
    return platform


@pytest.fixture
async def site(discord_platform: Any, fake: FakeDiscord) -> AsyncIterator[str]:
    """The web page, registered with the fake as the client's only redirect URI."""
    async with web_running(discord_platform, hub=False) as base:
        fake.oauth_redirect_uris = [f"{base}/login/discord/callback"]
        yield base


async def authorize_url(client: httpx.AsyncClient) -> str:
    """Start a sign-in: where /login/discord sends the browser."""
    start = await client.get("/login/discord")
    assert start.status_code == 302, start.text
    return start.headers["location"]


async def consent(client: httpx.AsyncClient, authorize: str, user_id: int) -> str:
    """On the fake's consent page, "Continue as" this person: the callback URL it sends to."""
    screen = await client.get(authorize)
    assert screen.status_code == 200, screen.text
    found = re.search(rf'id="authorize-{user_id}"[^>]* href="([^"]+)"', screen.text)
    assert found, screen.text
    chosen = await client.get(urljoin(authorize, html.unescape(found.group(1))))
    assert chosen.status_code == 302, chosen.text
    return chosen.headers["location"]


async def sign_in_as(client: httpx.AsyncClient, user_id: int) -> httpx.Response:
    """The whole flow: /login/discord, the consent page, the callback's answer."""
    callback = await consent(client, await authorize_url(client), user_id)
    return await client.get(callback)


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


async def test_sign_in_with_discord_lands_on_the_page_that_asked(
    site: str, fake: FakeDiscord
) -> None:
    async with httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as client:
        asked = await client.get("/?from=test")
        assert asked.status_code == 303 and asked.headers["location"] == "/login"
        login = await client.get("/login")
        assert 'id="discord-login" href="/login/discord"' in login.text

        authorize = await authorize_url(client)
        assert authorize.startswith(f"{fake.base_url}/oauth2/authorize?")
        params = query_of(authorize)
        assert params["response_type"] == "code" and params["scope"] == "identify"
        assert params["client_id"] == fake.oauth_client_id
        assert params["redirect_uri"] == f"{site}/login/discord/callback"
        assert params["code_challenge_method"] == "S256"
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", params["code_challenge"])
        assert len(params["state"]) >= 32

        screen = await client.get(authorize)
        assert "Continue as alice" in screen.text and "Continue as bob" in screen.text
        assert f'id="authorize-{fake.bot_user_id}"' not in screen.text  # people only
        assert 'id="cancel"' in screen.text
        callback = await consent(client, authorize, ALICE)
        assert callback.startswith(f"{site}/login/discord/callback?")
        assert query_of(callback)["state"] == params["state"]

        landed = await client.get(callback)
        assert landed.status_code == 303 and landed.headers["location"] == "/?from=test"
        home = await client.get("/?from=test")
        assert home.status_code == 200
        assert f'title="discord:{ALICE}">alice<' in home.text
        assert "(admin)" not in home.text

        # The same callback again: its state was used up.
        again = await client.get(callback)
        assert again.status_code == 403
        assert "This sign-in did not start here; try again." in again.text

    # What the page sent Discord: the code with the verifier of the challenge, then the token.
    exchange = next(r for r in fake.requests if r.path == "/oauth2/token")
    assert exchange.status == 200
    assert exchange.json["grant_type"] == "authorization_code"
    assert exchange.json["redirect_uri"] == f"{site}/login/discord/callback"
    assert exchange.json["code"] == query_of(callback)["code"]
    assert pkce_challenge(exchange.json["code_verifier"]) == params["code_challenge"]
    assert exchange.json["client_secret"] == fake.oauth_client_secret
    me = next(r for r in fake.requests if r.path == "/users/@me")
    assert me.status == 200 and me.headers["Authorization"].startswith("Bearer ")


async def test_a_callback_that_did_not_start_here_is_refused(site: str, fake: FakeDiscord) -> None:
    async with httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as client:
        callback = await consent(client, await authorize_url(client), ALICE)
        code = query_of(callback)["code"]
        for query in (f"code={code}&state=someone-elses", f"code={code}"):
            refused = await client.get(f"/login/discord/callback?{query}")
            assert refused.status_code == 403
            assert "This sign-in did not start here; try again." in refused.text
        assert (await client.get("/")).status_code == 303  # not signed in
    # A browser that never started a sign-in, handed someone's callback (login CSRF).
    async with httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as victim:
        refused = await victim.get(callback)
        assert refused.status_code == 403
        assert (await victim.get("/")).status_code == 303
    assert not any(r.path == "/oauth2/token" for r in fake.requests)  # nothing exchanged


async def test_a_replayed_code_is_refused(site: str, fake: FakeDiscord) -> None:
    async with httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as first:
        callback = await consent(first, await authorize_url(first), ALICE)
        assert (await first.get(callback)).status_code == 303
    async with httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as other:
        # A sign-in of its own (a valid state), finished with the used code.
        state = query_of(await authorize_url(other))["state"]
        code = query_of(callback)["code"]
        replayed = await other.get(f"/login/discord/callback?code={code}&state={state}")
        assert replayed.status_code == 400
        assert "used already or is too old" in replayed.text
        assert (await other.get("/")).status_code == 303  # not signed in
    exchanges = [r for r in fake.requests if r.path == "/oauth2/token"]
    assert [r.status for r in exchanges] == [200, 400]
    assert exchanges[1].response["error"] == "invalid_grant"


async def test_the_fake_checks_the_verifier_and_the_client(site: str, fake: FakeDiscord) -> None:
    async with (
        httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as client,
        httpx.AsyncClient(base_url=fake.api_base) as discord,
    ):
        callback = await consent(client, await authorize_url(client), ALICE)
        form = {
            "grant_type": "authorization_code",
            "code": query_of(callback)["code"],
            "redirect_uri": f"{site}/login/discord/callback",
            "code_verifier": "a-tampered-verifier-" + "x" * 40,
            "client_id": fake.oauth_client_id,
            "client_secret": "not-the-secret",
        }
        wrong_client = await discord.post("/oauth2/token", data=form)
        assert wrong_client.status_code == 401
        assert wrong_client.json() == {"error": "invalid_client"}
        form["client_secret"] = str(fake.oauth_client_secret)
        tampered = await discord.post("/oauth2/token", data=form)
        assert tampered.status_code == 400
        assert tampered.json()["error"] == "invalid_grant"
        assert "code_verifier" in tampered.json()["error_description"]
        # The code is spent: the page's own exchange is refused, with a clear page.
        late = await client.get(callback)
        assert late.status_code == 400 and "sign in again" in late.text
        assert (await client.get("/")).status_code == 303


async def test_cancelling_on_discord_signs_nobody_in(site: str, fake: FakeDiscord) -> None:
    async with httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as client:
        authorize = await authorize_url(client)
        screen = await client.get(authorize)
        cancel = re.search(r'id="cancel" href="([^"]+)"', screen.text)
        assert cancel
        back = await client.get(urljoin(authorize, html.unescape(cancel.group(1))))
        assert back.status_code == 302
        assert query_of(back.headers["location"])["error"] == "access_denied"
        cancelled = await client.get(back.headers["location"])
        assert cancelled.status_code == 200
        assert "Sign-in with Discord was cancelled." in cancelled.text
        assert 'id="discord-login"' in cancelled.text
        assert (await client.get("/")).status_code == 303
    assert not any(r.path == "/oauth2/token" for r in fake.requests)


async def test_discord_down_gives_a_clear_page(site: str, fake: FakeDiscord) -> None:
    async with httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as client:
        outage = fake.outage("POST", r"/oauth2/token")
        failed = await client.get(await consent(client, await authorize_url(client), ALICE))
        assert failed.status_code == 502
        assert "Discord answered 503 while signing you in; try again in a minute." in failed.text
        assert "Traceback" not in failed.text
        assert outage.answered == 1
        outage.end()

        callback = await consent(client, await authorize_url(client), ALICE)
        await fake.stop()  # Discord unreachable
        unreachable = await client.get(callback)
        assert unreachable.status_code == 502
        assert "Discord could not be reached to finish signing you in" in unreachable.text
        assert (await client.get("/")).status_code == 303


async def test_a_banned_member_signs_in_as_the_same_banned_member(
    site: str, discord_platform: Any
) -> None:
    await discord_platform.service.ban_user(UserRef(Frontend.discord, str(BOB)), "spam")
    async with httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as client:
        assert (await sign_in_as(client, BOB)).status_code == 303
        home = await client.get("/")
        assert home.status_code == 200 and f'title="discord:{BOB}">bob<' in home.text
        imagined = await client.post(
            "/imagine", data={"csrf": await csrf_of(client), "prompt": "a red cat"}
        )
        assert imagined.status_code == 400
        assert "You are banned from prefloop (spam)." in imagined.text
    assert await count(discord_platform, "generations") == 0


async def test_discord_admins_are_admins_on_the_page(site: str) -> None:
    async with (
        httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as boss,
        httpx.AsyncClient(base_url=site, headers=PAGE_HEADERS) as bob,
    ):
        assert (await sign_in_as(boss, BOSS)).status_code == 303
        assert (await sign_in_as(bob, BOB)).status_code == 303
        boss_home, bob_home = await boss.get("/"), await bob.get("/")
        assert "boss (admin)" in boss_home.text and 'href="/admin"' in boss_home.text
        assert "(admin)" not in bob_home.text and 'href="/admin"' not in bob_home.text


async def test_a_sign_in_counts_once_against_the_rate_limit(
    discord_platform: Any, fake: FakeDiscord
) -> None:
    discord_platform.settings.web.login_attempts_per_minute = 2
    async with (
        web_running(discord_platform, hub=False) as base,
        httpx.AsyncClient(base_url=base, headers=PAGE_HEADERS) as client,
    ):
        fake.oauth_redirect_uris = [f"{base}/login/discord/callback"]
        for _ in range(2):  # a start and its callback each: two sign-ins, two attempts
            assert (await sign_in_as(client, ALICE)).status_code == 303
        refused = await client.get("/login/discord")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "too many sign-in attempts" in refused.text.lower()
        # A login link's page uses nothing up (a previewer may open it); its button counts.
        link = login_url(base, discord_platform, "cli:root")
        assert (await client.get(link)).status_code == 200
        assert (await use_login_link(client, link)).status_code == 429


async def test_behind_a_trusted_proxy_the_limit_counts_each_forwarded_address(
    platform: Any,
) -> None:
    platform.settings.web.login_attempts_per_minute = 1

    async def start(client: httpx.AsyncClient, address: str) -> int:
        answer = await client.get("/login/discord", headers={"X-Forwarded-For": address})
        return answer.status_code  # 404 (no Discord client here) once counted, or 429

    platform.settings.web.forwarded_allow_ips = ["127.0.0.1"]  # the proxy
    async with (
        web_running(platform, hub=False) as base,
        httpx.AsyncClient(base_url=base, headers=PAGE_HEADERS) as proxy,
    ):
        assert await start(proxy, "203.0.113.1") == 404
        assert await start(proxy, "203.0.113.1") == 429
        assert await start(proxy, "203.0.113.2") == 404  # someone else behind the proxy
    platform.settings.web.forwarded_allow_ips = None  # the default: nobody's headers believed
    async with (
        web_running(platform, hub=False) as base,
        httpx.AsyncClient(base_url=base, headers=PAGE_HEADERS) as proxy,
    ):
        assert await start(proxy, "203.0.113.1") == 404
        assert await start(proxy, "203.0.113.2") == 429  # all from 127.0.0.1


def session_cookie(platform: Any, **session: Any) -> str:
    """A session cookie as the app signs it (Starlette's: base64 JSON, timestamp-signed)."""
    signer = TimestampSigner(session_key(platform.settings))
    return signer.sign(base64.b64encode(json.dumps(session).encode())).decode()


async def test_a_session_ends_session_hours_after_its_sign_in(platform: Any) -> None:
    platform.settings.web.session_hours = 12
    async with web_running(platform, hub=False) as base:
        for hours, status in ((11, 200), (13, 303)):
            # Freshly signed, as Starlette signs it anew on every change: only "since" is old.
            cookie = session_cookie(
                platform,
                member="cli:alice",
                name="alice",
                csrf="token",
                admin_grant=False,
                since=int(time.time() - hours * 3600),
            )
            async with httpx.AsyncClient(
                base_url=base, headers=PAGE_HEADERS, cookies={"prefloop_session": cookie}
            ) as client:
                home = await client.get("/")
                assert home.status_code == status, hours
                if status == 303:
                    assert home.headers["location"] == "/login"
                    assert "prefloop_session=null" in home.headers["set-cookie"]  # cleared
                    posted = await client.post(
                        "/imagine",
                        data={"prompt": "a cat"},
                        headers={"X-CSRF-Token": "token", "Cookie": f"prefloop_session={cookie}"},
                    )
                    assert posted.status_code == 303 and posted.headers["location"] == "/login"
    assert await count(platform, "generations") == 0


async def test_behind_https_the_cookie_is_secure_and_the_public_origin_is_accepted(
    platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = "https://prefloop.example"
    platform.settings.web.public_url = public
    bound: list[int] = []  # the port it listens on (its announced URL is the public one)

    def create_app_on(platform: Any, *, port: int | None = None, hub: bool = True) -> Any:
        assert port is not None
        bound.append(port)
        return create_app(platform, port=port, hub=hub)

    monkeypatch.setattr(server, "create_app", create_app_on)
    async with web_running(platform, hub=False) as announced:
        assert announced == public
        base = f"http://127.0.0.1:{bound[0]}"  # where the proxy would send the requests
        client = httpx.AsyncClient(base_url=base, headers=PAGE_HEADERS)
        away = await client.get("/me")
        assert away.status_code == 303
        assert "secure" in away.headers["set-cookie"].lower()  # prefloop_next too
        asked = await client.get(login_url(base, platform, "cli:alice"))
        first = asked.headers["set-cookie"]
        assert first.startswith("prefloop_session=") and "secure" in first.lower()

        def cookie_of(answer: httpx.Response) -> dict[str, str]:
            # httpx keeps a Secure cookie off plain http: send it as the browser would.
            [value] = [
                c.split(";", 1)[0]
                for c in answer.headers.get_list("set-cookie")
                if c.startswith("prefloop_session=")
            ]
            return {"Cookie": value, "Origin": public}

        signed = await client.post(
            "/login/link",
            data={
                "csrf": hidden_field(asked.text, "csrf"),
                "token": hidden_field(asked.text, "token"),
            },
            headers=cookie_of(asked),
        )
        assert signed.status_code == 303
        assert all("secure" in c.lower() for c in signed.headers.get_list("set-cookie"))
        session = cookie_of(signed)
        home = await client.get("/", headers=session)
        assert home.status_code == 200 and 'title="cli:alice"' in home.text
        token = hidden_field(home.text, "csrf")
        imagined = await client.post(
            "/imagine", data={"csrf": token, "prompt": "a red cat"}, headers=session
        )
        assert imagined.status_code == 303 and imagined.headers["location"].startswith("/sets/")
        foreign = await client.post(
            "/imagine",
            data={"csrf": token, "prompt": "a red cat"},
            headers={**session, "Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        await client.aclose()
    assert await count(platform, "generations") == 1


async def test_without_a_client_id_there_is_no_discord_sign_in(platform: Any) -> None:
    assert platform.settings.web.discord_client_id is None
    async with (
        web_running(platform, hub=False) as base,
        httpx.AsyncClient(base_url=base, headers=PAGE_HEADERS) as client,
    ):
        login = await client.get("/login")
        assert 'id="discord-login"' not in login.text
        assert f'id="discord-redirect">{base}/login/discord/callback<' in login.text
        refused = await client.get("/login/discord")
        assert refused.status_code == 404
        assert "Sign-in with Discord is not set up on this server" in refused.text


def test_discords_urls_follow_the_bots_api_base() -> None:
    real = discord_endpoints("https://discord.com/api/v10")
    assert real.authorize == "https://discord.com/oauth2/authorize"
    assert real.token == "https://discord.com/api/v10/oauth2/token"
    assert real.me == "https://discord.com/api/v10/users/@me"
    # RFC 7636's example: the S256 challenge of its verifier.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


async def test_every_post_route_carries_the_csrf_check(platform: Any) -> None:
    app = create_app(platform, hub=False)
    posts = [r for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]
    assert posts, "no POST routes at all?"
    unchecked = [r.path for r in posts if not getattr(r.endpoint, "csrf_checked", False)]
    assert unchecked == []
