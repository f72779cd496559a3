"""`prefloop run` serves the web page beside the worker; `prefloop web login-link` lets an
admin in without Discord: the way `make run` is meant to be looked at."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.aio import eventually
from tests.support.cli import platform_env, prefloop
from tests.support.web import PAGE_HEADERS, use_login_link


async def test_prefloop_run_serves_the_page_and_a_login_link_opens_the_dashboard(
    platform: Any, tmp_path: Path
) -> None:
    env = platform_env(platform, tmp_path / "data")
    log = tmp_path / "run.log"
    with log.open("w") as stderr:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", "--no-discord", env=env, stderr=stderr
        )
    try:

        async def announced() -> str | None:
            found = re.search(r"prefloop web page: (http://\S+)", log.read_text())
            return found.group(1) if found else None

        base = await eventually(announced, timeout=120)
        link = await asyncio.to_thread(
            prefloop, "web", "login-link", "root", env={**env, "PREFLOOP_WEB__PUBLIC_URL": base}
        )
        assert link.returncode == 0, link.stderr
        assert "as an admin" in link.stderr
        url = link.stdout.strip()
        assert url.startswith(f"{base}/login/link?token=")
        async with httpx.AsyncClient(base_url=base, timeout=60, headers=PAGE_HEADERS) as browser:
            assert (await browser.get("/admin")).status_code == 303  # not signed in yet
            signed = await use_login_link(browser, url)  # its page, then its button
            assert signed.status_code == 303
            dashboard = await browser.get("/admin")
            assert dashboard.status_code == 200, dashboard.text[:500]
            assert "cli:root" in dashboard.text
        server.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(server.wait(), 120) == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


def test_a_login_link_needs_the_pages_address_when_the_port_is_any_free_one(
    platform: Any, tmp_path: Path
) -> None:
    env = platform_env(platform, tmp_path / "data", web__port="0")
    refused = prefloop("web", "login-link", "root", env=env)
    assert refused.returncode == 2
    assert "PREFLOOP_WEB__PUBLIC_URL" in refused.stderr and "--url" in refused.stderr
    assert ":0/" not in refused.stdout
    given = prefloop("web", "login-link", "root", "--url", "http://127.0.0.1:8123/", env=env)
    assert given.returncode == 0, given.stderr
    assert given.stdout.strip().startswith("http://127.0.0.1:8123/login/link?token=")
