"""The Discord bot end to end: what members see, and what lands in PostgreSQL."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import text

from bot.domain import UserRef
from tests.discord.conftest import (
    ADMIN,
    ALICE,
    BOB,
    bot_running,
    final_message,
    imagine,
    reconfigure,
    worker_running,
)
from tests.support import count

EPHEMERAL = 64


def _private_text(it: Any, user_id: int) -> str:
    """The text of the private answer(s) of an interaction, as its member sees them."""
    return " ".join(m.content for m in it.messages() if m.ephemeral and m.visible_for(user_id))


async def _private(fake: Any, it: Any, user_id: int) -> str:
    return await fake.wait_for(lambda: _private_text(it, user_id), timeout=10)


async def test_imagine_progress_images_buttons_and_a_pick(bot_platform: Any, fake: Any) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a red cat", count=2)
        assert it.callback["type"] == 5 and it.callback_status == 200  # deferred in time
        final = await fake.wait_for(lambda: final_message(it), timeout=60)

        assert [a.filename for a in final.attachments] == ["1_1.png", "1_2.png"]
        for attachment in final.attachments:
            with Image.open(io.BytesIO(attachment.data)) as image:
                assert image.format == "PNG" and image.size == (64, 64)
        assert final.custom_ids() == ["pf:pick:1:0", "pf:pick:1:1", "pf:reroll:1"]
        assert f"<@{ALICE}>" in final.content and "no adapter" in final.content
        assert bot_platform.settings.generator.model in final.content
        texts = [revision.content for revision in final.revisions]
        assert any("queued" in t for t in texts) and any("generating, step" in t for t in texts)
        progress = [t for t in texts if "generating" in t]
        assert len(progress) == len(set(progress))  # edited only when the text changes

        click = await fake.click(final.id, "pf:pick:1:1", user_id=ALICE)
        assert "You picked image 2" in await _private(fake, click, ALICE)
        assert not _private_text(click, BOB)  # nobody else sees it
        await fake.wait_for(lambda: "1 member has picked" in fake.message(final.id).content)

    stats = await bot_platform.service.stats()
    assert stats.picks == 1 and stats.requester_picks == 1


async def test_repick_double_click_and_another_member(bot_platform: Any, fake: Any) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a lighthouse", count=3)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)

        async def click(custom_id: str, user_id: int) -> str:
            return await _private(
                fake, await fake.click(final.id, custom_id, user_id=user_id), user_id
            )

        assert "You picked image 1" in await click("pf:pick:1:0", ALICE)
        assert "already your pick" in await click("pf:pick:1:0", ALICE)
        assert "from image 1 to image 3" in await click("pf:pick:1:2", ALICE)
        assert "You picked image 2" in await click("pf:pick:1:1", BOB)
        await fake.wait_for(lambda: "2 members have picked" in fake.message(final.id).content)

    async with bot_platform.engine.connect() as conn:
        picks = (
            await conn.execute(text("SELECT user_id, image_index FROM choices ORDER BY user_id"))
        ).all()
        history = await conn.scalar(text("SELECT count(*) FROM choice_history"))
    assert [index for _, index in picks] == [2, 1] and history == 3


async def test_buttons_survive_a_restart_and_results_wait_for_the_bot(
    bot_platform: Any, fake: Any
) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a castle", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
        waiting = await imagine(fake, BOB, "a moat", count=2)
    # The bot is down; the second generation finishes meanwhile.
    async with worker_running(bot_platform):
        await _until(bot_platform, "SELECT count(*) = 2 FROM generations WHERE status = 'done'")
    async with bot_running(bot_platform, fake):  # a new process
        click = await fake.click(final.id, "pf:pick:1:1", user_id=BOB)
        assert "You picked image 2" in await _private(fake, click, BOB)
        delivered = await fake.wait_for(lambda: final_message(waiting), timeout=30)
        assert len(delivered.attachments) == 2
    assert await count(bot_platform, "choices") == 1


async def test_refusals_are_private_and_write_nothing(bot_platform: Any, fake: Any) -> None:
    reconfigure(bot_platform, blocked_words=["gore"])
    async with bot_running(bot_platform, fake):
        empty = await imagine(fake, ALICE, "   ")
        assert "empty" in await _private(fake, empty, ALICE)
        long = await imagine(fake, ALICE, " ".join(f"word{i}" for i in range(60)))
        assert "would be cut" in await _private(fake, long, ALICE)
        blocked = await imagine(fake, ALICE, "so much gore")
        assert "blocked word" in await _private(fake, blocked, ALICE)
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
        assert "#1" in await _private(fake, second, ALICE)
        banned = await imagine(fake, BOB, "a dog", count=2)
        assert "banned from prefloop (spam)" in await _private(fake, banned, BOB)
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
        assert "no longer exists" in await _private(fake, click, BOB)
    assert await count(bot_platform, "generations") == 0


async def test_stats_and_help(bot_platform: Any, fake: Any) -> None:
    async with bot_running(bot_platform, fake):
        stats = await fake.slash_command("stats", user_id=ALICE)
        assert "0 prompts, 0 picks" in await _private(fake, stats, ALICE)
        help_ = await fake.slash_command("help", user_id=ALICE)
        assert "/imagine" in await _private(fake, help_, ALICE)


ADMIN_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("stats", {}),
    ("ban", {"user": BOB, "reason": "spam"}),
    ("unban", {"user": BOB}),
    ("export", {}),
    ("retrain", {}),
    ("status", {}),
    ("models", {}),
]


async def test_admin_commands_are_checked_on_our_side_and_audited(
    bot_platform: Any, fake: Any
) -> None:
    async with bot_running(bot_platform, fake):
        for name, options in ADMIN_CALLS:
            it = await fake.slash_command("admin", options, subcommand=name, user_id=ALICE)
            assert "Only prefloop admins" in await _private(fake, it, ALICE), name
        assert (await bot_platform.service.stats()).banned == 0  # the refused ban did nothing
        ban = await fake.slash_command(
            "admin", {"user": BOB, "reason": "spam"}, subcommand="ban", user_id=ADMIN
        )
        assert "is banned" in await _private(fake, ban, ADMIN)
        status = await fake.slash_command("admin", subcommand="status", user_id=ADMIN)
        assert "queued 0, running 0" in await _private(fake, status, ADMIN)
        export = await fake.slash_command("admin", subcommand="export", user_id=ADMIN)
        assert "not available yet" in await _private(fake, export, ADMIN)
    async with bot_platform.engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT actor, action, allowed FROM admin_actions ORDER BY id"))
        ).all()
        banned = await conn.scalar(
            text("SELECT banned FROM users WHERE external_id = :id"), {"id": str(BOB)}
        )
    refused = [(a, allowed) for actor, a, allowed in rows if actor == f"discord:{ALICE}"]
    assert refused == [(name, False) for name, _ in ADMIN_CALLS]
    assert [(a, allowed) for actor, a, allowed in rows if actor == f"discord:{ADMIN}"] == [
        ("ban", True),
        ("status", True),
        ("export", True),
    ]
    assert banned


async def test_a_rate_limited_post_is_retried(bot_platform: Any, fake: Any) -> None:
    fake.rate_limit("PATCH", r"/webhooks/\d+/[^/]+/messages/\d+", retry_after=0.3, times=2)
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a patient cat", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
    assert len(final.attachments) == 2
    assert sum(r.status == 429 for r in fake.requests) == 2


async def test_images_reach_the_channel_when_the_interaction_expired(
    bot_platform: Any, fake: Any
) -> None:
    async with bot_running(bot_platform, fake):
        it = await imagine(fake, ALICE, "a slow queue", count=2)
        await fake.wait_for(lambda: "queued" in (it.original.content if it.original else ""))
        fake.expire_interaction(it)  # 15 minutes in the queue
        async with worker_running(bot_platform):
            posted = await fake.wait_for(
                lambda: [m for m in fake.messages_in() if m.via == "channel" and m.attachments],
                timeout=60,
            )
    assert len(posted) == 1 and f"<@{ALICE}>" in posted[0].content
    assert posted[0].custom_ids() == ["pf:pick:1:0", "pf:pick:1:1", "pf:reroll:1"]


async def test_twenty_members_at_once(bot_platform: Any, fake: Any) -> None:
    members = [910_000_000_000_000_000 + k for k in range(20)]
    for member in members:
        fake.add_member(member, f"member{member % 100}")
    bot_platform.settings.generator.steps = 3
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        handles = await asyncio.gather(
            *(
                fake.slash_command("imagine", {"prompt": f"cat {m}", "count": 2}, user_id=m)
                for m in members
            )
        )
        await asyncio.gather(*(h.wait_for_callback(timeout=5) for h in handles))
        assert all(h.callback_status == 200 and h.callback["type"] == 5 for h in handles)
        finals = await fake.wait_for(
            lambda: all(final_message(h) for h in handles) and [final_message(h) for h in handles],
            timeout=120,
        )
    assert len({m.id for m in finals}) == 20
    with_images = [m for m in fake.messages_in() if m.attachments]
    assert len(with_images) == 20  # each delivered once


async def _until(platform: Any, query: str, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while True:
            async with platform.engine.connect() as conn:
                if await conn.scalar(text(query)):
                    return
            await asyncio.sleep(0.1)
