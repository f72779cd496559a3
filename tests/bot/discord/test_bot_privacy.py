"""What the bot shows in public: nothing left after /forget-me, no pings, no server details."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.domain import UserRef
from tests.support.database import count
from tests.support.discord_bot import (
    ADMIN,
    ALICE,
    BOB,
    bot_running,
    final_message,
    imagine,
    private,
    worker_running,
)

ROLE = 900_000_000_000_000_100
MANAGE_GUILD = 1 << 5
SLOW = 180  # seconds a result may take on a busy machine


def queued(it: Any) -> bool:
    return it.original is not None and "queued" in it.original.content


def channel_posts(fake: Any, include_deleted: bool = False) -> list[Any]:
    """Results the bot sent to the channel itself (an expired interaction's fallback)."""
    messages = fake.messages_in(include_deleted=include_deleted)
    return [m for m in messages if m.via == "channel" and m.attachments]


async def forget(fake: Any, user_id: int) -> None:
    """/forget-me and its confirmation button, as the member does it."""
    ask = await fake.slash_command("forget-me", user_id=user_id)
    await ask.wait_for_callback()
    done = await fake.click(ask.messages()[0].id, f"pf:forget:{user_id}", user_id=user_id)
    await done.wait_for_callback()


async def test_forget_me_deletes_every_message_posted_about_a_generation(
    bot_platform: Any, fake: Any
) -> None:
    bot_platform.settings.generator.steps = 4
    async with bot_running(bot_platform, fake):
        late = await imagine(fake, ALICE, "my late cat", count=2)
        await fake.wait_for(lambda: queued(late))
        fake.expire_interaction(late)  # 15 minutes in the queue: the images go to the channel
        async with worker_running(bot_platform):
            in_channel = (await fake.wait_for(lambda: channel_posts(fake), timeout=SLOW))[0]
            answered = await imagine(fake, ALICE, "my private cat", count=2)
            in_place = await fake.wait_for(lambda: final_message(answered), timeout=SLOW)
        other = await imagine(fake, BOB, "bob's dog", count=2)  # no worker: it stays queued
        await fake.wait_for(lambda: queued(other))
        await forget(fake, ALICE)
        alices = [late.original.id, in_channel.id, in_place.id]
        await fake.wait_for(lambda: all(fake.message(i).deleted for i in alices), timeout=SLOW)
    assert [m.id for m in fake.messages_in()] == [other.original.id]  # only Bob's is left


async def test_images_posted_while_their_member_is_forgotten_come_down_at_once(
    bot_platform: Any, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = bot_platform.service.update_delivery

    async def forgotten_meanwhile(generation_id: int, **changes: Any) -> bool:
        if "posted" in changes:  # the images are out, the message is not recorded yet
            await bot_platform.service.forget_user(UserRef.parse(f"discord:{ALICE}"))
        return await record(generation_id, **changes)

    monkeypatch.setattr(bot_platform.service, "update_delivery", forgotten_meanwhile)
    bot_platform.settings.generator.steps = 4
    async with bot_running(bot_platform, fake):
        it = await imagine(fake, ALICE, "a cat in flight", count=2)
        await fake.wait_for(lambda: queued(it))
        fake.expire_interaction(it)
        async with worker_running(bot_platform):
            posted = await fake.wait_for(lambda: channel_posts(fake, True), timeout=SLOW)
            await fake.wait_for(lambda: posted[0].deleted and it.original.deleted, timeout=SLOW)
    assert fake.messages_in() == [] and await count(bot_platform, "generations") == 0


async def test_prompts_ping_no_one_and_show_as_typed(bot_platform: Any, fake: Any) -> None:
    fake.add_role(ROLE, "moderators")
    prompt = f"@everyone <@{BOB}> <@&{ROLE}> [free nitro](https://evil.example) **loud**"
    async with bot_running(bot_platform, fake):
        it = await imagine(fake, ALICE, prompt, count=2)
        async with worker_running(bot_platform):
            final = await fake.wait_for(lambda: final_message(it), timeout=SLOW)
        pick = await fake.click(final.id, "pf:pick:1:0", user_id=BOB)
        await private(fake, pick, BOB)
        await fake.wait_for(lambda: "1 member has voted" in fake.message(final.id).content)
    texts = [revision.content for revision in fake.message(final.id).revisions]
    for live in ("@everyone", f"<@{BOB}>", f"<@&{ROLE}>", "](https", "**loud"):
        assert not [t for t in texts if live in t], live
    assert f"<@{ALICE}>" in texts[-1]
    bodies = [
        body
        for request in fake.requests
        if isinstance(request.json, dict)
        for body in (request.json, request.json.get("data") or {})
        if "content" in body
    ]
    assert len(bodies) >= 4  # queued, progress, the result, the pick's answer, the count
    pinged = []
    for body in bodies:
        mentions = body.get("allowed_mentions")
        assert mentions is not None and mentions["parse"] == [], body
        pinged.append({str(user) for user in mentions.get("users", [])})
    assert all(users <= {str(ALICE)} for users in pinged) and {str(ALICE)} in pinged


async def test_members_see_plain_failures_and_registry_ids_never_paths(
    bot_platform: Any, fake: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from training.generator import Generator

    def denied(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", "/srv/prefloop/outputs/1")

    monkeypatch.setattr(Generator, "generate", denied)
    bot_platform.settings.worker.max_attempts = 1
    folder = tmp_path / "hps-1"
    folder.mkdir()
    registry = bot_platform.service.registry
    version = await registry.register("hps", str(folder), {})
    await registry.promote(version)
    model = bot_platform.settings.generator.model  # a folder in the tests
    async with bot_running(bot_platform, fake):
        it = await imagine(fake, ALICE, "a cat", count=2)
        async with worker_running(bot_platform):
            final = await fake.wait_for(lambda: final_message(it), timeout=SLOW)
        stats = await fake.slash_command("stats", user_id=ALICE)
        numbers = await private(fake, stats, ALICE)
        status = await fake.slash_command("admin", subcommand="status", user_id=ADMIN)
        admin = await private(fake, status, ADMIN)
    assert "Something went wrong while making these images" in final.content
    for text in (final.content, numbers):
        assert "/srv" not in text and "Errno" not in text and str(tmp_path) not in text, text
    assert f"hps #{version}" in numbers and "generator a local model" in numbers
    assert model not in numbers
    assert "last failure #1: Something went wrong" in admin


async def test_admin_is_offered_to_server_managers_only(bot_platform: Any, fake: Any) -> None:
    synced = {command["name"]: command for command in fake.commands()}
    assert synced["admin"]["default_member_permissions"] == str(MANAGE_GUILD)
    for name in ("imagine", "stats", "forget-me", "help"):
        assert synced[name]["default_member_permissions"] is None, name
