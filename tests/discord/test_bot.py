"""The Discord bot end to end: what members see, and what lands in PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import itertools
from typing import Any

import pytest
from PIL import Image
from pydantic import SecretStr
from sqlalchemy import text

from bot.discord.client import sync_commands
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
        assert any("queued" in t for t in texts) and any("generating" in t for t in texts)
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


async def test_commands_are_synced_stats_and_help(bot_platform: Any, fake: Any) -> None:
    synced = {command["name"]: command for command in fake.commands()}
    assert set(synced) == {"imagine", "stats", "forget-me", "help", "admin"}
    options = {o["name"]: o for o in synced["imagine"]["options"]}
    assert options["prompt"]["required"] and (
        options["count"]["min_value"],
        options["count"]["max_value"],
    ) == (2, 4)
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
    assert posted[0].custom_ids() == ["pf:pick:1:0", "pf:pick:1:1", "pf:reroll:1"]
    tried_webhook = [r for r in fake.requests if r.path.startswith("/webhooks") and r.files]
    assert bool(tried_webhook) == (how == "discord says so")


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


async def test_progress_is_edited_at_most_every_interval_and_picks_stay_private(
    bot_platform: Any, fake: Any
) -> None:
    bot_platform.settings.worker.progress_interval = 0.05  # the worker tells often ...
    bot_platform.settings.discord.progress_interval = 0.5  # ... the bot edits less often
    bot_platform.settings.generator.steps = 120  # a few seconds on the CPU
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a patient lighthouse", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=120)
        click = await fake.click(final.id, "pf:pick:1:1", user_id=BOB)
        await _private(fake, click, BOB)
        public = await fake.wait_for(
            lambda: (
                "1 member has picked" in fake.message(final.id).content and fake.message(final.id)
            )
        )
    times = [r.at for r in final.revisions if "generating, step" in r.content]
    assert len(times) >= 2
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.45
    assert "image 2" not in public.content and "Pick" not in public.content  # who picked what


async def test_images_over_the_upload_limit_are_sent_smaller(bot_platform: Any) -> None:
    from tests.fake_discord import FakeDiscord

    async with FakeDiscord(attachment_size_limit=3_000) as small:
        small.add_member(ALICE, "alice")
        bot_platform.settings.discord.api_base_url = small.api_base
        bot_platform.settings.discord.gateway_url = small.gateway_url
        bot_platform.settings.discord.token = SecretStr(small.token)

        await sync_commands(bot_platform.settings, None)
        async with bot_running(bot_platform, small), worker_running(bot_platform):
            it = await imagine(small, ALICE, "a detailed cat", count=2)
            final = await small.wait_for(lambda: final_message(it), timeout=60)
    assert all(a.filename.endswith(".jpg") and len(a.data) <= 3_000 for a in final.attachments)
    stored = (await bot_platform.service.get_generation(1)).images[0]
    assert (await bot_platform.storage.get(stored.storage_key)).startswith(b"\x89PNG")


async def test_when_the_database_fails_a_click_gets_an_apology(
    bot_platform: Any, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a cat", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)

        async def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionRefusedError("database unreachable")

        monkeypatch.setattr(bot_platform.service, "record_choice", unreachable)
        click = await fake.click(final.id, "pf:pick:1:0", user_id=BOB)
        assert "cannot reach its database" in await _private(fake, click, BOB)
        monkeypatch.setattr(bot_platform.service, "submit_prompt", unreachable)
        refused = await imagine(fake, BOB, "a dog", count=2)
        await fake.wait_for(lambda: "could not queue your prompt" in refused.original.content)


async def test_forget_me_takes_down_the_posted_images(bot_platform: Any, fake: Any) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "my private cat", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
        forget = await fake.slash_command("forget-me", user_id=ALICE)
        await forget.wait_for_callback()
        await fake.click(forget.messages()[0].id, f"pf:forget:{ALICE}", user_id=ALICE)
        gone = await fake.wait_for(
            lambda: (
                "Deleted at the member's request" in fake.message(final.id).content
                and fake.message(final.id)
            )
        )
    assert gone.attachments == [] and gone.custom_ids() == []
