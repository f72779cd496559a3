"""The real bot, the real worker and PostgreSQL, against the fake Discord on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bot.config import DiscordSettings
from bot.discord.client import run_bot, sync_commands
from bot.jobs.worker import serve_worker
from bot.prompts import PromptRules
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.support import running

ADMIN = 900_000_000_000_000_001
ALICE = 900_000_000_000_000_002
BOB = 900_000_000_000_000_003


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        for user_id, name in ((ADMIN, "admin"), (ALICE, "alice"), (BOB, "bob")):
            server.add_member(user_id, name)
        yield server


@pytest.fixture
async def bot_platform(platform: Any, fake: FakeDiscord) -> Any:
    """The platform configured for the fake Discord, with the commands synced there."""
    platform.settings.discord = DiscordSettings(
        token=fake.token,
        api_base_url=fake.api_base,
        gateway_url=fake.gateway_url,
        admin_user_ids=[ADMIN],
        progress_interval=0.2,
    )
    platform.settings.generator.steps = 20
    await sync_commands(platform.settings, None)
    return platform


def reconfigure(platform: Any, **limits: Any) -> None:
    """Change limits on a live platform (the service reads its rules at start)."""
    for name, value in limits.items():
        setattr(platform.settings.limits, name, value)
    platform.service.rules = PromptRules(platform.settings)


@asynccontextmanager
async def bot_running(platform: Any, fake: FakeDiscord) -> AsyncIterator[None]:
    async with running(run_bot(platform)):
        await fake.wait_until_ready(timeout=120)
        yield


@asynccontextmanager
async def worker_running(platform: Any) -> AsyncIterator[None]:
    async with running(serve_worker(platform)):
        yield


def final_message(it: Any) -> StoredMessage | None:
    """The interaction's answer once it carries the images (or the failure)."""
    for message in it.messages():
        if message.attachments or any(c.startswith("pf:reroll") for c in message.custom_ids()):
            return message
    return None


async def imagine(fake: FakeDiscord, user_id: int, prompt: str, **options: Any) -> Any:
    it = await fake.slash_command("imagine", {"prompt": prompt, **options}, user_id=user_id)
    await it.wait_for_callback(timeout=5)
    return it


def private_text(it: Any, user_id: int) -> str:
    """The text of the private answer(s) of an interaction, as its member sees them."""
    return " ".join(m.content for m in it.messages() if m.ephemeral and m.visible_for(user_id))


async def private(fake: FakeDiscord, it: Any, user_id: int) -> str:
    """Wait for the interaction's private answer to ``user_id``; its text."""
    return await fake.wait_for(lambda: private_text(it, user_id), timeout=120)
