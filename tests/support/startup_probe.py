"""The bot and the in-process worker in one fresh process, against the fake Discord.

Run by tests/bot/discord/test_startup.py as ``python -m tests.support.startup_probe DATABASE
MODEL DATA_DIR ADAPTER``; prints one JSON line. A fresh interpreter matters: only in one
that has not imported the model libraries yet does a worker's start-up import them.

1. The bot connects; an /imagine arrives and, in the same turn of the event loop, the
   worker starts (so its start-up runs while the bot has the interaction to answer).
2. An adapter is promoted; two /imagine arrive as the next job loads it (hot reload).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bot.config import DiscordSettings
from bot.discord.client import sync_commands
from bot.registry import ModelRegistry
from bot.runtime import open_platform
from tests.support.discord_bot import ALICE, BOB, bot_running, final_message, worker_running
from tests.support.fake_discord import FakeDiscord
from tests.support.settings import make_settings


async def answer(fake: FakeDiscord, it: Any) -> dict[str, Any]:
    """The bot's callback status and, once posted, how many images the member got."""
    await it.wait_for_callback(timeout=300)
    if it.callback_status != 200:  # refused as late: the member saw "interaction failed"
        return {"status": it.callback_status, "images": 0}
    final = await fake.wait_for(lambda: final_message(it), timeout=600)
    return {"status": it.callback_status, "images": len(final.attachments)}


async def adapter_used(platform: Any, it: Any) -> int | None:
    generation = int(final_message(it).custom_ids()[0].split(":")[2])  # type: ignore[union-attr]
    async with platform.engine.connect() as conn:
        return await conn.scalar(
            text("SELECT adapter_version_id FROM generations WHERE id = :g"), {"g": generation}
        )


async def probe(database_url: str, model: str, data_dir: str, adapter: str) -> dict[str, Any]:
    async with FakeDiscord() as fake:
        for user_id, name in ((ALICE, "alice"), (BOB, "bob")):
            fake.add_member(user_id, name)
        settings = make_settings(Path(data_dir), database_url, Path(model))
        settings.discord = DiscordSettings(
            token=fake.token, api_base_url=fake.api_base, gateway_url=fake.gateway_url
        )
        async with open_platform(settings, upgrade=False) as platform:
            await sync_commands(settings, None)
            async with bot_running(platform, fake):
                options = {"prompt": "a red cat", "count": 2}
                first = await fake.slash_command("imagine", options, user_id=ALICE)
                async with worker_running(platform):
                    outcome = {"startup": await answer(fake, first)}
                    registry = ModelRegistry(platform.sessions)
                    version = await registry.register("generator_adapter", adapter)
                    await registry.promote(version)
                    during = [
                        await fake.slash_command(
                            "imagine", {"prompt": "a blue cat", "count": 2}, user_id=member
                        )
                        for member in (ALICE, BOB)
                    ]
                    outcome["reload"] = [await answer(fake, it) for it in during]
                    outcome["adapter"] = await adapter_used(platform, during[0]) == version
    return outcome


if __name__ == "__main__":
    print(json.dumps(asyncio.run(probe(*sys.argv[1:5]))))
