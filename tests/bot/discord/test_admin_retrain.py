"""/admin retrain through the fake Discord: queued once, run by `prefloop run`'s worker,
its outcome announced in the admin channel, its stage in /admin status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.jobs.app import serve_maintenance
from tests.support.aio import eventually, running
from tests.support.discord_bot import ADMIN, bot_running, private
from tests.support.retrain import TRAINER, scripted_gates
from tests.support.synthetic import seed_picks


async def test_admin_retrain_runs_once_and_announces_in_the_admin_channel(
    bot_platform: Any, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_picks(bot_platform.database_url, bot_platform.settings.data_dir / "store", picks=12)
    monkeypatch.setenv("PREFLOOP_TEST_GATES", json.dumps(scripted_gates(0.6, 0.3)))
    bot_platform.settings.retrain.trainer = TRAINER
    bot_platform.settings.retrain.hps_base = "tiny"
    bot_platform.settings.discord.admin_channel_id = fake.channel_id

    async def admin(name: str) -> str:
        it = await fake.slash_command("admin", subcommand=name, user_id=ADMIN)
        return await private(fake, it, ADMIN)

    async with bot_running(bot_platform, fake):
        first = await admin("retrain")
        assert "Retrain 1 queued" in first
        second = await admin("retrain")
        assert "Retrain 1 is already queued, since" in second and "not queued again" in second
        assert "retrain 1 (admin) queued" in await admin("status")
        async with running(serve_maintenance(bot_platform)):

            async def announced() -> Any:
                return [
                    m
                    for m in fake.messages_in(fake.channel_id)
                    if "retrain 1:" in (m.content or "")
                ]

            posts = await eventually(announced, timeout=60)
        text = posts[0].content
        assert "HPS v1 promoted" in text
        assert "adapter v2 kept as a candidate: win rate 30.0% is below 55.0%" in text
        assert "retrain 1 (admin) succeeded" in await admin("status")
