"""The real bot, the real worker and PostgreSQL, against the fake Discord on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.config import DiscordSettings
from bot.discord.client import sync_commands
from tests.support.discord_bot import ADMIN, ALICE, BOB
from tests.support.fake_discord import FakeDiscord


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
