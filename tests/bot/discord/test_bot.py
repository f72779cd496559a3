"""The Discord bot end to end: what members see, and what lands in PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import itertools
import sys
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import text

from bot.jobs.app import serve_maintenance
from tests.support.aio import eventually, running
from tests.support.database import count
from tests.support.discord_bot import (
    ADMIN,
    ALICE,
    BOB,
    bot_running,
    final_message,
    imagine,
    private,
    private_text,
    worker_running,
)
from training.presets import WORLD_SIDE

EPHEMERAL = 64


async def test_imagine_progress_images_buttons_and_a_pick(bot_platform: Any, fake: Any) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a red cat", count=2)
        assert it.callback["type"] == 5 and it.callback_status == 200  # deferred in time
        final = await fake.wait_for(lambda: final_message(it), timeout=60)

        assert [a.filename for a in final.attachments] == ["1_1.png", "1_2.png"]
        for attachment in final.attachments:
            with Image.open(io.BytesIO(attachment.data)) as image:
                assert image.format == "PNG" and image.size == (WORLD_SIDE, WORLD_SIDE)
        assert final.custom_ids() == [
            "pf:pick:1:0",
            "pf:pick:1:1",
            "pf:reroll:1",
            "pf:tie:1",
            "pf:none:1",
        ]
        assert f"<@{ALICE}>" in final.content and "a local model, no adapter" in final.content
        assert bot_platform.settings.generator.model not in final.content  # a server path
        texts = [revision.content for revision in final.revisions]
        assert any("queued" in t for t in texts) and any("generating" in t for t in texts)
        progress = [t for t in texts if "generating" in t]
        assert len(progress) == len(set(progress))  # edited only when the text changes

        click = await fake.click(final.id, "pf:pick:1:1", user_id=ALICE)
        assert "You picked image 2" in await private(fake, click, ALICE)
        assert not private_text(click, BOB)  # nobody else sees it
        await fake.wait_for(lambda: "1 member has voted" in fake.message(final.id).content)

    stats = await bot_platform.service.stats()
    assert stats.picks == 1 and stats.requester_picks == 1


async def test_repick_double_click_and_another_member(bot_platform: Any, fake: Any) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a lighthouse", count=3)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)

        async def click(custom_id: str, user_id: int) -> str:
            return await private(
                fake, await fake.click(final.id, custom_id, user_id=user_id), user_id
            )

        assert "You picked image 1" in await click("pf:pick:1:0", ALICE)
        assert "already your pick" in await click("pf:pick:1:0", ALICE)
        assert "from image 1 to image 3" in await click("pf:pick:1:2", ALICE)
        assert "You picked image 2" in await click("pf:pick:1:1", BOB)
        await fake.wait_for(lambda: "2 members have voted" in fake.message(final.id).content)

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
        assert "You picked image 2" in await private(fake, click, BOB)
        delivered = await fake.wait_for(lambda: final_message(waiting), timeout=120)
        assert len(delivered.attachments) == 2
    assert await count(bot_platform, "choices") == 1


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
        assert "0 prompts, 0 picks" in await private(fake, stats, ALICE)
        help_ = await fake.slash_command("help", user_id=ALICE)
        assert "/imagine" in await private(fake, help_, ALICE)


ADMIN_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("stats", {}),
    ("ban", {"user": BOB, "reason": "spam"}),
    ("unban", {"user": BOB}),
    ("export", {}),
    ("retrain", {}),
    ("status", {}),
    ("models", {}),
    ("promote", {"version": 1}),
    ("rollback", {"kind": "hps"}),
]


async def test_admin_commands_are_checked_on_our_side_and_audited(
    bot_platform: Any, fake: Any
) -> None:
    async with bot_running(bot_platform, fake):
        for name, options in ADMIN_CALLS:
            it = await fake.slash_command("admin", options, subcommand=name, user_id=ALICE)
            assert "Only prefloop admins" in await private(fake, it, ALICE), name
        assert (await bot_platform.service.stats()).banned == 0  # the refused ban did nothing
        ban = await fake.slash_command(
            "admin", {"user": BOB, "reason": "spam"}, subcommand="ban", user_id=ADMIN
        )
        assert "is banned" in await private(fake, ban, ADMIN)
        status = await fake.slash_command("admin", subcommand="status", user_id=ADMIN)
        assert "queued 0, running 0" in await private(fake, status, ADMIN)
        export = await fake.slash_command(
            "admin", {"format": "parquet", "incremental": True}, subcommand="export", user_id=ADMIN
        )
        answer = await private(fake, export, ADMIN)
        assert "Export queued as job" in answer
        assert "new votes of every kind (requester) in the parquet" in answer
        folder = answer.split("`")[1]
        async with running(serve_maintenance(bot_platform)):  # what `prefloop run` runs
            await eventually(lambda: asyncio.to_thread(Path(folder, "manifest.json").exists))
        assert Path(folder, "train.parquet").exists()
        status = await fake.slash_command("admin", subcommand="status", user_id=ADMIN)
        assert f"0 picks in `{folder}`" in await private(fake, status, ADMIN)
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
        ("status", True),
    ]
    assert banned


async def test_admins_see_promote_and_roll_back_models(bot_platform: Any, fake: Any) -> None:
    registry = bot_platform.service.registry
    version = await registry.register("hps", "/models/hps-1", {"top1": 0.41})

    async def admin(name: str, **options: Any) -> str:
        it = await fake.slash_command("admin", options, subcommand=name, user_id=ADMIN)
        return await private(fake, it, ADMIN)

    async with bot_running(bot_platform, fake):
        assert f"#{version} hps (candidate): `/models/hps-1` — top1 0.41" in await admin("models")
        assert "is active from the next job" in await admin("promote", version=version)
        assert "**(active)**" in await admin("models")
        assert "There is no model version 99" in await admin("promote", version=99)
        assert "No hps version is active now" in await admin("rollback", kind="hps")
    assert await registry.active("hps") is None
    async with bot_platform.engine.connect() as conn:
        rows = await conn.execute(text("SELECT action, target FROM admin_actions ORDER BY id"))
        audited = [(a, t) for a, t in rows if a in ("promote", "rollback")]
    assert audited == [("promote", str(version)), ("rollback", "hps")]


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


async def test_progress_is_edited_at_most_every_interval_and_picks_stayprivate(
    bot_platform: Any, fake: Any
) -> None:
    bot_platform.settings.worker.progress_interval = 0.05  # the worker tells often ...
    bot_platform.settings.discord.progress_interval = 0.5  # ... the bot edits less often
    bot_platform.settings.generator.steps = 120  # a few seconds on the CPU
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a patient lighthouse", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=120)
        click = await fake.click(final.id, "pf:pick:1:1", user_id=BOB)
        await private(fake, click, BOB)
        public = await fake.wait_for(
            lambda: (
                "1 member has voted" in fake.message(final.id).content and fake.message(final.id)
            )
        )
    times = [r.at for r in final.revisions if "generating, step" in r.content]
    assert len(times) >= 2
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.45
    assert "image 2" not in public.content and "Pick" not in public.content  # who picked what


async def test_forget_me_takes_down_the_posted_images(bot_platform: Any, fake: Any) -> None:
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "my private cat", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
        forget = await fake.slash_command("forget-me", user_id=ALICE)
        await forget.wait_for_callback()
        await fake.click(forget.messages()[0].id, f"pf:forget:{ALICE}", user_id=ALICE)
        await fake.wait_for(lambda: fake.message(final.id).deleted)
    assert fake.messages_in() == []


async def _until(platform: Any, query: str, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while True:
            async with platform.engine.connect() as conn:
                if await conn.scalar(text(query)):
                    return
            await asyncio.sleep(0.1)


async def test_prefloop_discord_sync_registers_the_commands(fake: Any, tmp_path: Any) -> None:
    from tests.support.cli import cli_env

    env = cli_env(
        data_dir=str(tmp_path),
        discord__token=fake.token,
        discord__api_base_url=fake.api_base,
        discord__gateway_url=fake.gateway_url,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "discord",
        "sync",
        "--guild",
        str(fake.guild_id),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, errors = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, errors.decode()
    assert f"synced 5 commands to guild {fake.guild_id}" in out.decode()
    assert {c["name"] for c in fake.commands(fake.guild_id)} == {
        "imagine",
        "stats",
        "forget-me",
        "help",
        "admin",
    }
