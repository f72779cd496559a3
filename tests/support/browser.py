"""A real Chromium for the web page's browser tests: which one, how it starts, and what
each page leaves behind (full-page screenshots, console errors, CSP violations).

Which Chromium: ``PREFLOOP_BROWSER`` (a path), else Debian's ``/usr/bin/chromium``, else
``chromium`` on the PATH. Playwright drives it through ``executable_path``; its own
browser download is never used. Without one the browser tests are skipped, unless
``PREFLOOP_REQUIRE_BROWSER=1`` (CI sets it): then they fail and say why.

Screenshots go to ``artifacts/screenshots/<test>-<step>.png`` in the checkout
(``PREFLOOP_ARTIFACTS`` names another folder). The canonical ones (the README's) are
copied as ``<name>.png`` to the folder ``PREFLOOP_SCREENSHOTS_TO`` names (relative to the
checkout), when set; ``make screenshots`` does that for docs/screenshots:

    PREFLOOP_SCREENSHOTS_TO=docs/screenshots python -m pytest tests/web/browser
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.db.models import Choice, Generation, User
from bot.domain import UserRef
from tests.support.aio import eventually
from tests.support.web import login_url

ROOT = Path(__file__).resolve().parents[2]
BROWSER_ENV = "PREFLOOP_BROWSER"
REQUIRE_ENV = "PREFLOOP_REQUIRE_BROWSER"
ARTIFACTS_ENV = "PREFLOOP_ARTIFACTS"
SCREENSHOTS_ENV = "PREFLOOP_SCREENSHOTS_TO"
DEBIAN_CHROMIUM = "/usr/bin/chromium"
# Wide enough for the dashboard, small enough for the README (one pixel per CSS pixel).
VIEWPORT = {"width": 1100, "height": 760}
# Generous: on two busy cores the worker's first set waits for its pipeline to load.
SLOW_MS = 120_000


def find_chromium() -> str | None:
    """The Chromium to drive: ``PREFLOOP_BROWSER``, Debian's, or ``chromium`` on the PATH."""
    configured = os.environ.get(BROWSER_ENV)
    if configured:
        return configured
    if Path(DEBIAN_CHROMIUM).is_file():
        return DEBIAN_CHROMIUM
    return shutil.which("chromium")


def chromium_or_skip() -> str:
    """The Chromium's path; a skip without one (a failure where ``PREFLOOP_REQUIRE_BROWSER=1``)."""
    found = find_chromium()
    if found is not None and not Path(found).is_file():
        pytest.fail(f"{BROWSER_ENV}={found} is not a file", pytrace=False)
    if found is None:
        message = (
            f"no Chromium for the browser tests (set {BROWSER_ENV}, or install Debian's "
            "chromium: apt-get install chromium chromium-driver)"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message}; {REQUIRE_ENV}=1 asks for them", pytrace=False)
        pytest.skip(message)
    return found


async def launch_chromium(playwright: Any, path: str) -> Any:
    """Headless Chromium at ``path`` (root's needs --no-sandbox: no user namespaces for it)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return await playwright.chromium.launch(executable_path=path, headless=True, args=args)


def artifacts_folder() -> Path:
    """Where the screenshots of a test run go (``PREFLOOP_ARTIFACTS`` or ./artifacts)."""
    return Path(os.environ.get(ARTIFACTS_ENV) or ROOT / "artifacts") / "screenshots"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


class PageWatch:
    """Everything a page complained about: console errors (CSP violations among them,
    "Refused to …"), uncaught script errors, requests that failed outright."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        self._allowed: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", self._failed)

    def allow(self, *fragments: str) -> None:
        """Expected complaints from here on: those containing one of ``fragments`` (a 403
        page's "Failed to load resource: … 403")."""
        self._allowed.extend(fragments)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            location = message.location.get("url", "") if message.location else ""
            self.problems.append(f"console error: {message.text} ({location})")

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        # A page left while it streams progress (or loads an image) aborts that request.
        if "ERR_ABORTED" in failure:
            return
        self.problems.append(f"request failed: {request.method} {request.url}: {failure}")

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a in p for a in self._allowed)]

    def check(self, where: str = "") -> None:
        """Fail when the page complained of anything not allowed."""
        found = self.unexpected()
        assert not found, f"the page complained{' on ' + where if where else ''}: " + "\n".join(
            found
        )


class Visitor:
    """One person in the browser: a context of their own (cookies), a page and its watch."""

    def __init__(self, test: str, who: str, context: Any, page: Any) -> None:
        self.test = test
        self.who = who
        self.context = context
        self.page = page
        self.watch = PageWatch(page)

    async def snap(self, step: str, *, canonical: str | None = None) -> Path:
        """A full-page screenshot as an artefact; ``canonical``: also the README's
        ``<canonical>.png`` when ``PREFLOOP_SCREENSHOTS_TO`` is set."""
        folder = artifacts_folder()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_safe(self.test)}-{_safe(step)}.png"
        await self.page.screenshot(path=str(path), full_page=True, animations="disabled")
        target = os.environ.get(SCREENSHOTS_ENV)
        if canonical and target:
            folder = ROOT / target  # relative to the checkout (an absolute path stays)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folder / f"{canonical}.png")
        return path


async def open_visitor(browser: Any, test: str, who: str, base_url: str) -> Visitor:
    """A fresh context (no cookies) with one page, at the site's base URL."""
    context = await browser.new_context(
        base_url=base_url, viewport=VIEWPORT, device_scale_factor=1, locale="en-GB"
    )
    context.set_default_timeout(30_000)
    page = await context.new_page()
    return Visitor(test, who, context, page)


async def close_visitors(visitors: Iterable[Visitor]) -> list[str]:
    """Close every context; the complaints their pages left (for the fixture to report)."""
    problems: list[str] = []
    for visitor in visitors:
        problems += [f"{visitor.who}: {p}" for p in visitor.watch.unexpected()]
        await visitor.context.close()
    return problems


@dataclass
class Site:
    """The running platform, its web page and the people visiting it."""

    base: str
    platform: Any
    fake: Any  # tests.support.fake_discord.FakeDiscord
    browser: Any
    test: str
    visitors: list[Visitor] = field(default_factory=list)

    async def visit(self, who: str) -> Visitor:
        """A person with a browser context of their own, not signed in."""
        visitor = await open_visitor(self.browser, self.test, who, self.base)
        self.visitors.append(visitor)
        return visitor

    async def signed_in(self, member: str, *, admin: bool = False) -> Visitor:
        """A person signed in as ``member`` by a login link (its page, then its "Sign in"
        button), on the imagine page."""
        visitor = await self.visit(member.split(":")[-1])
        page = visitor.page
        answer = await page.goto(login_url(self.base, self.platform, member, admin=admin))
        assert answer is not None and answer.ok, f"the login link for {member} failed"
        await page.locator("button#login-link-confirm").click()
        await page.wait_for_url(self.base + "/")
        return visitor

    async def vote_of(self, generation_id: int, member: str) -> tuple[str, int | None] | None:
        """``member``'s stored vote on the set (kind, 0-based image), from the database."""
        ref = UserRef.parse(member)
        async with self.platform.sessions() as session:
            row = (
                await session.execute(
                    select(Choice.kind, Choice.image_index)
                    .join(User, User.id == Choice.user_id)
                    .where(
                        Choice.generation_id == generation_id,
                        User.frontend == ref.frontend,
                        User.external_id == ref.external_id,
                    )
                )
            ).first()
        return None if row is None else (str(row[0]), row[1])

    async def generations(self) -> int:
        async with self.platform.sessions() as session:
            return len((await session.scalars(select(Generation.id))).all())

    async def finished_set(self, member: str, prompt: str, count: int = 2) -> int:
        """A set of ``member``'s made by the worker (asked through the service, as the
        bot or the CLI would), once it is done."""
        service = self.platform.service
        submitted = await service.submit_prompt(UserRef.parse(member), prompt, count)
        generation_id = int(submitted.generation_id)

        async def done() -> bool:
            status = (await service.get_generation(generation_id)).status
            assert status not in ("failed", "cancelled"), f"set {generation_id}: {status}"
            return bool(status == "done")

        await eventually(done, timeout=SLOW_MS / 1000)
        return generation_id


class StepGate:
    """Holds every generation after its step ``at`` until the test opens the gate, so
    that a page can be seen mid-way on any machine (no timing involved)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.reached = threading.Event()
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    def wrap(self, generate: Callable[..., Any]) -> Callable[..., Any]:
        gate = self

        def held(self: Any, *args: Any, on_step: Any = None, **kwargs: Any) -> Any:
            def step(done: int, total: int) -> None:
                if on_step is not None:
                    on_step(done, total)
                if done == gate.at:
                    gate.reached.set()
                    # Bounded: a failed test must not leave the worker's thread for good.
                    gate._open.wait(timeout=SLOW_MS / 1000)

            return generate(self, *args, on_step=step, **kwargs)

        return held


async def all_images_loaded(page: Any, selector: str) -> None:
    """Wait until every image matching ``selector`` has loaded (a real bitmap)."""
    images = page.locator(selector)

    async def loaded() -> bool:
        states = await images.evaluate_all(
            "(all) => all.map((image) => image.complete && image.naturalWidth > 0)"
        )
        return bool(states) and all(states)

    await eventually(loaded, timeout=SLOW_MS / 1000)
