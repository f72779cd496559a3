"""The Discord bot when things go wrong: refusals, failures, limits, expiry, outages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from bot.discord.client import sync_commands
from bot.domain import UserRef
from tests.support.database import count
from tests.support.discord_bot import (
    ALICE,
    BOB,
    bot_running,
    final_message,
    imagine,
    private,
    reconfigure,
    worker_running,
)

EPHEMERAL = 64


async def test_refusals_are_private_and_write_nothing(bot_platform: Any, fake: Any) -> None:
    reconfigure(bot_platform, blocked_words=["gore"])
    async with bot_running(bot_platform, fake):
        empty = await imagine(fake, ALICE, "   ")
        assert "empty" in await private(fake, empty, ALICE)
        long = await imagine(fake, ALICE, " ".join(f"word{i}" for i in range(60)))
        assert "would be cut" in await private(fake, long, ALICE)
        blocked = await imagine(fake, ALICE, "so much gore")
        assert "blocked word" in await private(fake, blocked, ALICE)
        for it in (empty, long, blocked):
            assert it.callback["type"] == 4 and it.callback["data"]["flags"] & EPHEMERAL
    assert await count(bot_platform, "generations") == 0
    assert fake.messages_in() == []  # nothing public was posted


async def test_queue_limit_and_ban_are_refused_privately(bot_platform: Any, fake: Any) -> None:
    reconfigure(bot_platform, max_queued_per_user=1)
    await bot_platform.service.ban_user(UserRef.parse(f"discord:{BOB}"), "spam")
    async with bot_running(bot_platform, fake):  # no worker: generations stay queued
        first = await imagine(fake, ALICE, "a cat", count=2)
        await fake.wait_for(lambda: "queued" in (first.original.content if first.original else ""))
        second = await imagine(fake, ALICE, "another cat", count=2)
        assert "#1" in await private(fake, second, ALICE)
        banned = await imagine(fake, BOB, "a dog", count=2)
        assert "banned from prefloop (spam)" in await private(fake, banned, BOB)
        public = fake.messages_in()
    assert [m.id for m in public] == [first.original.id]  # the refused ones left no trace
    assert await count(bot_platform, "generations") == 1


async def test_a_failed_generation_says_why_and_offers_a_reroll(
    bot_platform: Any, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.generator import Generator

    def out_of_memory(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Generator, "generate", out_of_memory)
    bot_platform.settings.worker.max_attempts = 1
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a huge cat", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
        assert "ran out of memory" in final.content and final.custom_ids() == ["pf:reroll:1"]
        monkeypatch.undo()
        reroll = await fake.click(final.id, "pf:reroll:1", user_id=BOB)
        rerolled = await fake.wait_for(lambda: final_message(reroll), timeout=60)
        assert len(rerolled.attachments) == 2 and f"<@{BOB}>" in rerolled.content


async def test_a_deleted_generations_buttons_answer_plainly(bot_platform: Any, fake: Any) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a cat", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
        forget = await fake.slash_command("forget-me", user_id=ALICE)
        await forget.wait_for_callback()
        confirm = forget.messages()[0]
        assert confirm.ephemeral and confirm.custom_ids() == [f"pf:forget:{ALICE}"]
        done = await fake.click(confirm.id, f"pf:forget:{ALICE}", user_id=ALICE)
        await done.wait_for_callback()
        assert "deleted 1 prompts" in fake.message(confirm.id).content
        click = await fake.click(final.id, "pf:pick:1:0", user_id=BOB)
        assert "no longer exists" in await private(fake, click, BOB)
    assert await count(bot_platform, "generations") == 0


async def test_a_rate_limited_result_is_posted_after_the_wait(
    bot_platform: Any, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.discord.delivery import Deliverer

    async def no_progress(self: Any, event: Any) -> None:
        return None

    monkeypatch.setattr(Deliverer, "on_progress", no_progress)  # the result is the only edit
    fake.rate_limit("PATCH", r"/webhooks/\d+/[^/]+/messages/\d+", retry_after=0.3, times=2)
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a patient cat", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
    assert len(final.attachments) == 2
    limited = [r for r in fake.requests if r.status == 429]
    assert len(limited) == 2 and all(len(r.files) == 2 for r in limited)  # the result itself


async def test_a_result_that_failed_to_post_is_posted_later(
    bot_platform: Any, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.discord.delivery import Deliverer

    post = Deliverer._post
    failures = []

    async def flaky(self: Any, view: Any) -> None:
        if not failures:
            failures.append(view.id)
            raise ConnectionResetError("the network blinked")
        await post(self, view)

    monkeypatch.setattr(Deliverer, "_post", flaky)
    bot_platform.settings.discord.retry_interval = 0.5
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a cat, eventually", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
    assert failures == [1] and len(final.attachments) == 2


async def test_a_result_outlasts_a_discord_outage_and_a_restart(
    bot_platform: Any, fake: Any
) -> None:
    old_retry_budget = 5  # tries after which results used to be dropped for good
    bot_platform.settings.discord.retry_interval = 0.05
    bot_platform.settings.generator.steps = 4
    async with bot_running(bot_platform, fake):
        it = await imagine(fake, ALICE, "a cat in the storm", count=2)
        await fake.wait_for(lambda: "queued" in (it.original.content if it.original else ""))
        # A long queue (the result goes to the channel), and the channel is down meanwhile.
        await bot_platform.service.update_delivery(1, token_expires_at="2000-01-01T00:00:00+00:00")
        outage = fake.outage("POST", r"/channels/\d+/messages")
        async with worker_running(bot_platform):
            await fake.wait_for(lambda: outage.answered > old_retry_budget + 1, timeout=180)
    tried = outage.answered
    assert not (await bot_platform.service.get_generation(1)).delivered
    async with bot_running(bot_platform, fake):  # a new process, while Discord is still down
        await fake.wait_for(lambda: outage.answered > tried, timeout=120)
        outage.end()
        posted = await fake.wait_for(
            lambda: [m for m in fake.messages_in() if m.via == "channel" and m.attachments],
            timeout=60,
        )
        await fake.wait_for(lambda: "images are in a new message" in it.original.content)
    assert len(posted) == 1 and f"<@{ALICE}>" in posted[0].content
    assert (await bot_platform.service.get_generation(1)).delivered


@pytest.mark.parametrize("how", ["discord says so", "our clock says so"])
async def test_images_reach_the_channel_when_the_interaction_expired(
    bot_platform: Any, fake: Any, how: str
) -> None:
    async with bot_running(bot_platform, fake):
        it = await imagine(fake, ALICE, "a slow queue", count=2)
        await fake.wait_for(lambda: "queued" in (it.original.content if it.original else ""))
        fake.expire_interaction(it)  # 15 minutes in the queue
        if how == "our clock says so":
            await bot_platform.service.update_delivery(
                1, token_expires_at="2000-01-01T00:00:00+00:00"
            )
        async with worker_running(bot_platform):
            posted = await fake.wait_for(
                lambda: [m for m in fake.messages_in() if m.via == "channel" and m.attachments],
                timeout=60,
            )
            await fake.wait_for(lambda: "images are in a new message" in it.original.content)
    assert len(posted) == 1 and f"<@{ALICE}>" in posted[0].content
    assert posted[0].custom_ids() == [
        "pf:pick:1:0",
        "pf:pick:1:1",
        "pf:reroll:1",
        "pf:tie:1",
        "pf:none:1",
    ]
    tried_webhook = [r for r in fake.requests if r.path.startswith("/webhooks") and r.files]
    assert bool(tried_webhook) == (how == "discord says so")


async def test_images_over_the_upload_limit_are_sent_smaller(bot_platform: Any) -> None:
    from tests.support.fake_discord import FakeDiscord

    async with FakeDiscord(attachment_size_limit=1_500) as small:  # the PNGs are ~2.6 kB
        small.add_member(ALICE, "alice")
        bot_platform.settings.discord.api_base_url = small.api_base
        bot_platform.settings.discord.gateway_url = small.gateway_url
        bot_platform.settings.discord.token = SecretStr(small.token)

        await sync_commands(bot_platform.settings, None)
        async with bot_running(bot_platform, small), worker_running(bot_platform):
            it = await imagine(small, ALICE, "a detailed cat", count=2)
            final = await small.wait_for(lambda: final_message(it), timeout=60)
    assert all(a.filename.endswith(".jpg") and len(a.data) <= 1_500 for a in final.attachments)
    stored = (await bot_platform.service.get_generation(1)).images[0]
    png = await bot_platform.storage.get(stored.storage_key)
    assert png.startswith(b"\x89PNG") and len(png) > 1_500  # kept whole; too big to send


async def test_when_the_database_fails_a_click_gets_an_apology(
    bot_platform: Any, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a cat", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)

        async def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionRefusedError("database unreachable")

        monkeypatch.setattr(bot_platform.service, "record_choice", unreachable)
        for button in ("pf:pick:1:0", "pf:tie:1", "pf:none:1"):
            click = await fake.click(final.id, button, user_id=BOB)
            assert "cannot reach its database" in await private(fake, click, BOB)
        monkeypatch.setattr(bot_platform.service, "submit_prompt", unreachable)
        refused = await imagine(fake, BOB, "a dog", count=2)
        await fake.wait_for(lambda: "could not queue your prompt" in refused.original.content)
