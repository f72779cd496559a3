"""Driving the real bot and worker against the fake Discord: members, commands, answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bot.discord.client import run_bot
from bot.generation.worker import serve_worker
from bot.picks.rules import PromptRules
from tests.support.aio import running
from tests.support.fake_discord import FakeDiscord, StoredMessage

ADMIN = 900_000_000_000_000_001
ALICE = 900_000_000_000_000_002
BOB = 900_000_000_000_000_003


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
