"""The whole platform in the test's event loop, driven by a real headless Chromium.

``site``: the ``platform`` (empty tables, the tiny preset), the fake Discord (members
alice, bob and an admin, and its OAuth pages for "Sign in with Discord"), a generation
worker, the maintenance worker (exports) and the web server on a free port.
``site.visit(who)`` opens a fresh browser context (a person with no cookies yet); every
page they saw must be free of console errors, script errors and CSP violations (checked
when the test ends). One Chromium serves the whole session (tests/support/browser.py
finds it). ``step_gate`` holds generations after their first step until the test says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from playwright.async_api import expect
from pydantic import SecretStr

from bot.config import DiscordSettings
from bot.generation.worker import serve_worker
from bot.jobs.app import serve_maintenance
from tests.support.aio import running
from tests.support.browser import Site, StepGate, chromium_or_skip, close_visitors, launch_chromium
from tests.support.discord_bot import ADMIN, ALICE, BOB
from tests.support.fake_discord import FakeDiscord
from tests.support.web import web_running

# Generous deadlines for every expect() (Playwright's default is 5 s): two busy cores.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    """One headless Chromium for the session (skipped, or failed in CI, without one)."""
    path = chromium_or_skip()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright, path)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The fake Discord with alice, bob and an admin in its guild."""
    async with FakeDiscord() as server:
        for user_id, name in ((ADMIN, "admin"), (ALICE, "alice"), (BOB, "bob")):
            server.add_member(user_id, name)
        yield server


@pytest.fixture
async def site(
    chromium: Any, platform: Any, fake: FakeDiscord, request: pytest.FixtureRequest
) -> AsyncIterator[Site]:
    settings = platform.settings
    settings.discord = DiscordSettings(api_base_url=fake.api_base, admin_user_ids=[ADMIN])
    settings.web.discord_client_id = fake.oauth_client_id  # "Sign in with Discord", at the fake
    settings.web.discord_client_secret = SecretStr(fake.oauth_client_secret or "")
    settings.worker.progress_interval = 0  # every step reaches the page
    settings.limits.max_queued_per_user = 4
    async with (
        running(serve_worker(platform)),
        running(serve_maintenance(platform)),
        web_running(platform) as base,
    ):
        site = Site(base, platform, fake, chromium, request.node.name)
        try:
            yield site
        finally:
            problems = await close_visitors(site.visitors)
    assert not problems, "pages complained:\n" + "\n".join(problems)


@pytest.fixture
def step_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[StepGate]:
    """Generations wait after their first step until ``step_gate.open()``."""
    from training.generator import Generator

    gate = StepGate(at=1)
    monkeypatch.setattr(Generator, "generate", gate.wrap(Generator.generate))
    try:
        yield gate
    finally:
        gate.open()
