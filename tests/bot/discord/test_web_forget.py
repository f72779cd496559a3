"""A Discord member who asks to be forgotten on the web page: the bot, running beside the
page in the same process (`prefloop run`), takes its posts about their sets down."""

from __future__ import annotations

from typing import Any

from tests.support.discord_bot import (
    ALICE,
    BOB,
    bot_running,
    final_message,
    imagine,
    worker_running,
)
from tests.support.web import csrf_of, signed_in, web_running

SLOW = 180  # seconds a result may take on a busy machine


async def test_forget_me_on_the_web_takes_the_bots_posts_down(bot_platform: Any, fake: Any) -> None:
    bot_platform.settings.generator.steps = 4
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        mine = await imagine(fake, ALICE, "alice's cat", count=2)
        posted = await fake.wait_for(lambda: final_message(mine), timeout=SLOW)
        bobs = await imagine(fake, BOB, "bob's dog", count=2)
        kept = await fake.wait_for(lambda: final_message(bobs), timeout=SLOW)
        async with (
            web_running(bot_platform, hub=False) as base,
            signed_in(base, bot_platform, f"discord:{ALICE}") as alice,
        ):
            token = await csrf_of(alice, "/me")
            done = await alice.post("/me/forget", data={"csrf": token, "confirm": "yes"})
        assert done.status_code == 200, done.text[:500]
        assert "the bot took down 1 of its messages" in " ".join(done.text.split())
        assert fake.message(posted.id).deleted
        assert not fake.message(kept.id).deleted  # Bob's stays
