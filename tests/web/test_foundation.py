"""The web app's frame: served by uvicorn, signed in by a link, every answer guarded."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.web.pages import safe_next
from tests.support.database import count
from tests.support.web import (
    PAGE_HEADERS,
    csrf_of,
    hidden_field,
    login_url,
    signed_in,
    use_login_link,
    web_running,
)


def words(page: str) -> str:
    """A page's text, tags dropped and spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())


async def test_login_link_asks_first_then_signs_in_once_with_a_guarded_cookie(
    platform: Any,
) -> None:
    async with web_running(platform, hub=False) as base:
        async with httpx.AsyncClient(base_url=base, headers=PAGE_HEADERS) as anonymous:
            first = await anonymous.get("/")
            assert first.status_code == 303 and first.headers["location"] == "/login"
            link = login_url(base, platform, "cli:root", admin=True)
            # A link previewer opens it: a page that asks, nothing used up, nobody signed in.
            for _ in range(2):
                asked = await anonymous.get(link)
                assert asked.status_code == 200
                assert "Sign in as cli:root (admin)?" in words(asked.text)
                assert 'id="login-link-confirm"' in asked.text
                assert (await anonymous.get("/")).status_code == 303
            answer = await anonymous.post(
                "/login/link",
                data={"csrf": hidden_field(asked.text, "csrf"), "token": link.split("=", 1)[1]},
            )
            assert answer.status_code == 303
            cookie = answer.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
            page = await anonymous.get("/")
            assert page.status_code == 200 and "cli:root" in page.text
            assert hidden_field(page.text, "csrf") != hidden_field(asked.text, "csrf")  # anew
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        async with httpx.AsyncClient(base_url=base, headers=PAGE_HEADERS) as other:
            again = await other.get(link)
            assert again.status_code == 403
            assert "used already" in again.text
            forged = await other.get(link[:-3] + "abc")
            assert forged.status_code == 403
            # The confirm page's form, posted without a session of its own: refused.
            token = link.split("=", 1)[1]
            refused = await other.post("/login/link", data={"csrf": "x", "token": token})
            assert refused.status_code == 403 and "expired" in refused.text
        async with httpx.AsyncClient(base_url=base, headers=PAGE_HEADERS) as late:
            plain = login_url(base, platform, "cli:bob")
            asked = await late.get(plain)
            assert "Sign in as cli:bob?" in words(asked.text)
            forged = await late.post(
                "/login/link",
                data={"csrf": hidden_field(asked.text, "csrf"), "token": plain[:-3] + "abc"},
            )
            assert forged.status_code == 403 and "not valid" in forged.text
            assert (await use_login_link(late, plain)).status_code == 303
            assert 'title="cli:bob">bob<' in (await late.get("/")).text


async def test_a_post_without_the_csrf_token_is_refused(platform: Any) -> None:
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:alice") as client,
    ):
        refused = await client.post("/logout", data={})
        assert refused.status_code == 403
        assert (await client.get("/")).status_code == 200  # still signed in
        token = await csrf_of(client)
        foreign = await client.post(
            "/logout", data={"csrf": token}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        out = await client.post("/logout", data={"csrf": token})
        assert out.status_code == 303
        assert (await client.get("/")).status_code == 303  # signed out


async def test_a_post_is_checked_before_its_body_is_read(platform: Any) -> None:
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:alice") as client,
    ):
        token = await csrf_of(client)
        async with httpx.AsyncClient(base_url=base, headers=PAGE_HEADERS) as stranger:
            # No session, so no token to hold a form against: refused before anything is read.
            refused = await stranger.post("/imagine", content=b"prompt=" + b"x" * 200_000)
            assert refused.status_code == 403 and "expired" in refused.text

        big = {"csrf": token, "prompt": "a cat", "negative": "x" * 70_000}
        too_large = await client.post("/imagine", data=big)
        assert too_large.status_code == 413
        assert "larger than 64 KiB" in too_large.text

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read, bounded
            yield f"csrf={token}&prompt=a+cat&negative=".encode()
            for _ in range(20):
                yield b"y" * 8192

        streamed = await client.post(
            "/imagine",
            content=chunks(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert streamed.status_code == 413 and "larger than 64 KiB" in streamed.text

        upload = await client.post(
            "/imagine",
            data={"csrf": token, "prompt": "a cat"},
            files={"picture": ("cat.png", b"\x89PNG", "image/png")},
        )
        assert upload.status_code == 415 and "no file uploads" in upload.text
        as_json = await client.post(
            "/imagine",
            data={"csrf": token, "prompt": "a cat"},
            files={"picture": ("cat.png", b"\x89PNG", "image/png")},
            headers={"Accept": "application/json"},
        )
        assert as_json.status_code == 415 and "no file uploads" in as_json.json()["error"]
        assert await count(platform, "generations") == 0
        fine = await client.post("/imagine", data={"csrf": token, "prompt": "a cat"})
        assert fine.status_code == 303
    assert await count(platform, "generations") == 1


async def test_an_unexpected_error_is_a_guarded_page_that_says_so(
    platform: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database fell over")

    monkeypatch.setattr(platform.service, "my_sets", broken)
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:alice") as client,
    ):
        failed = await client.get("/me")
        assert failed.status_code == 500
        assert failed.headers["content-type"].startswith("text/html")
        assert "Something went wrong on our side; it is in the server&#39;s log." in failed.text
        assert "fell over" not in failed.text and "Traceback" not in failed.text
        assert "frame-ancestors 'none'" in failed.headers["content-security-policy"]
        assert failed.headers["x-content-type-options"] == "nosniff"
        assert failed.headers["x-frame-options"] == "DENY"
        scripted = await client.get("/me", headers={"Accept": "application/json"})
        assert scripted.status_code == 500
        assert scripted.json() == {
            "error": "Something went wrong on our side; it is in the server's log."
        }
        assert (await client.get("/")).status_code == 200  # the rest works on
        logged = [r for r in caplog.records if r.getMessage() == "GET /me failed"]
        assert len(logged) == 2 and all(r.exc_info for r in logged)  # with the traceback
        # Every answer is guarded: static files and the router's own 404 too.
        for path in ("/static/app.css", "/no-such-page"):
            answer = await client.get(path)
            assert "script-src 'self'" in answer.headers["content-security-policy"], path
            assert answer.headers["x-content-type-options"] == "nosniff", path


async def test_only_a_navigation_is_sent_to_sign_in_and_back(platform: Any) -> None:
    async with (
        web_running(platform, hub=False) as base,
        httpx.AsyncClient(base_url=base) as script,
    ):
        for path, headers in (
            ("/sets/1/events", {"Accept": "text/event-stream"}),
            ("/me", {"Accept": "*/*"}),
        ):
            answer = await script.get(path, headers=headers)
            assert answer.status_code == 401, path
            assert "prefloop_next" not in answer.headers.get("set-cookie", "")
        for headers in ({"Sec-Fetch-Mode": "navigate"}, PAGE_HEADERS):
            opened = await script.get("/me?x=1", headers=headers)
            assert opened.status_code == 303 and opened.headers["location"] == "/login"
            assert "prefloop_next=" in opened.headers["set-cookie"]


def test_the_page_to_return_to_is_always_this_site() -> None:
    for target in ("/", "/me", "/sets/3?rate=1", "/admin/audit?page=2#top"):
        assert safe_next(target) == target
    for target in (
        None,
        "",
        "me",
        "//evil.example/x",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\x7f",
        "https://evil.example/",
        "/%0d%0aSet-Cookie:x" + "\r",
    ):
        assert safe_next(target) == "/", repr(target)
