"""The web app's frame: served by uvicorn, signed in by a link, every answer guarded."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.web import csrf_of, login_url, signed_in, web_running


async def test_login_link_signs_in_once_with_a_guarded_cookie(platform: Any) -> None:
    async with web_running(platform, hub=False) as base:
        async with httpx.AsyncClient(base_url=base) as anonymous:
            first = await anonymous.get("/")
            assert first.status_code == 303 and first.headers["location"] == "/login"
            link = login_url(base, platform, "cli:root", admin=True)
            answer = await anonymous.get(link)
            assert answer.status_code == 303
            cookie = answer.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=lax" in cookie
            page = await anonymous.get("/")
            assert page.status_code == 200 and "cli:root" in page.text
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        async with httpx.AsyncClient(base_url=base) as other:
            again = await other.get(link)
            assert again.status_code == 403
            assert "used already" in again.text
            forged = await other.get(link[:-3] + "abc")
            assert forged.status_code == 403


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
