"""The use cases: submitting prompts, picking, stats, bans and data requests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from bot.config import load_settings
from bot.domain import GenerationOptions, Refusal, UserRef, Vote
from bot.picks.rules import PromptRules
from tests.support.aio import eventually
from tests.support.database import count, make_done_generation

ALICE = UserRef.parse("cli:alice")
BOB = UserRef.parse("discord:123456789012345678")
WRITTEN = ("users", "generations", "procrastinate_jobs")


async def _written(platform: Any) -> dict[str, int]:
    return {table: await count(platform, table) for table in WRITTEN}


# ----- submit -----------------------------------------------------------------------


async def test_submit_writes_the_generation_and_its_job_together(platform: Any) -> None:
    submitted = await platform.service.submit_prompt(ALICE, "  a red   cat ", 3)
    assert submitted.queue_position == 1 and len(submitted.seeds) == 3
    async with platform.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT prompt, n_images, status, params, job_id FROM generations")
            )
        ).one()
        job = (
            await conn.execute(
                text("SELECT task_name, queue_name, args, status FROM procrastinate_jobs")
            )
        ).one()
    assert row.prompt == "a red cat" and row.n_images == 3 and row.status == "queued"
    assert row.params["seeds"] == submitted.seeds and row.job_id == submitted.job_id
    assert job.task_name == "prefloop.generate" and job.queue_name == "generate"
    assert job.args == {"generation_id": submitted.generation_id} and job.status == "todo"


async def test_seed_gives_consecutive_seeds_and_queue_positions_grow(platform: Any) -> None:
    first = await platform.service.submit_prompt(ALICE, "a cat", 2, GenerationOptions(seed=41))
    second = await platform.service.submit_prompt(BOB, "a dog", 4)
    assert first.seeds == [41, 42]
    assert second.queue_position == 2


async def test_default_count_and_negative_prompt_come_from_settings(platform: Any) -> None:
    platform.settings.generator.negative_prompt = "blurry"
    submitted = await platform.service.submit_prompt(
        ALICE, "a cat", options=GenerationOptions(negative_prompt="dogs")
    )
    view = await platform.service.get_generation(submitted.generation_id)
    assert view.n_images == platform.settings.generator.images_per_prompt
    assert view.negative_prompt == "blurry, dogs"


REFUSALS = [
    ("", {}, "empty", "empty"),
    ("   \n ", {}, "empty", "empty"),
    ("x" * 1001, {}, "too_long", "1001 characters"),
    (" ".join(f"word{i}" for i in range(60)), {}, "too_many_tokens", "would be cut: «"),
    ("a cat", {"n": 1}, "bad_count", "2 to 4"),
    ("a cat", {"n": 5}, "bad_count", "not 5"),
    ("a cat", {"options": GenerationOptions(seed=-1)}, "bad_seed", "whole number"),
    ("a cat", {"options": GenerationOptions(negative_prompt="y" * 2000)}, "too_long", "negative"),
]


@pytest.mark.parametrize(("prompt", "kwargs", "code", "says"), REFUSALS)
async def test_bad_requests_are_refused_and_write_nothing(
    platform: Any, prompt: str, kwargs: dict[str, Any], code: str, says: str
) -> None:
    with pytest.raises(Refusal) as refused:
        await platform.service.submit_prompt(ALICE, prompt, **kwargs)
    assert refused.value.code == code
    assert says in refused.value.message
    assert await _written(platform) == dict.fromkeys(WRITTEN, 0)


async def test_blocked_words_are_refused(platform: Any) -> None:
    platform.service = type(platform.service)(
        platform.sessions,
        platform.settings.model_copy(
            update={
                "limits": platform.settings.limits.model_copy(update={"blocked_words": ["gore"]})
            }
        ),
        platform.storage,
    )
    with pytest.raises(Refusal, match="blocked word") as refused:
        await platform.service.submit_prompt(ALICE, "A scene full of GORE")
    assert refused.value.code == "blocked"
    await platform.service.submit_prompt(ALICE, "a gorest of trees", 2)  # whole words only


def _rules(*blocked: str) -> PromptRules:
    return PromptRules(load_settings(_env_file=None, limits={"blocked_words": list(blocked)}))


@pytest.mark.parametrize(
    "spelled",
    [
        "a scene of go\u200bre",  # a zero-width space inside the word
        "a scene of g\u00adore",  # a soft hyphen
        "a scene of go\u2060re\ufeff",  # a word joiner, a byte-order mark
        "a scene of ｇｏｒｅ",  # full-width letters
        "a scene of ＧＯＲＥ",
        "a scene of ⓖⓞⓡⓔ",  # circled letters
    ],
)
def test_blocked_words_are_found_however_they_are_spelled(spelled: str) -> None:
    with pytest.raises(Refusal, match="blocked word") as refused:
        _rules("gore").text(spelled)
    assert refused.value.code == "blocked"


def test_blocked_words_are_normalised_too() -> None:
    with pytest.raises(Refusal, match="blocked word"):
        _rules("ｆｉｎｅ ａｒｔ").text("some ﬁne art")  # a full-width word, a ligature
    assert _rules("gore").text("a go re scene") == "a go re scene"  # a visible break stays


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x1c"])
def test_control_characters_are_refused_with_a_clear_message(control: str) -> None:
    with pytest.raises(Refusal) as refused:
        _rules().text(f"a red{control} cat")
    assert refused.value.code == "control_character"
    assert f"U+{ord(control):04X}" in refused.value.message
    assert "at character 6" in refused.value.message


def test_tabs_and_line_breaks_are_white_space() -> None:
    assert _rules().text("a red\tcat\r\non a mat") == "a red cat on a mat"


async def test_a_nul_in_a_prompt_is_refused_before_the_database(platform: Any) -> None:
    for kwargs in ({}, {"options": GenerationOptions(negative_prompt="blurry\x00")}):
        prompt = "a cat\x00" if not kwargs else "a cat"
        with pytest.raises(Refusal, match="control character"):
            await platform.service.submit_prompt(ALICE, prompt, 2, **kwargs)
    assert await _written(platform) == dict.fromkeys(WRITTEN, 0)


async def test_banned_member_is_refused_with_the_reason(platform: Any) -> None:
    await platform.service.ban_user(ALICE, "spam")
    before = await _written(platform)
    with pytest.raises(Refusal, match=r"banned from prefloop \(spam\)"):
        await platform.service.submit_prompt(ALICE, "a cat", 2)
    assert await _written(platform) == before
    assert await platform.service.unban_user(ALICE)
    await platform.service.submit_prompt(ALICE, "a cat", 2)


async def test_queue_limit_lists_the_waiting_generations(platform: Any) -> None:
    limit = platform.settings.limits.max_queued_per_user
    ids = [
        (await platform.service.submit_prompt(ALICE, "a cat", 2)).generation_id
        for _ in range(limit)
    ]
    with pytest.raises(Refusal) as refused:
        await platform.service.submit_prompt(ALICE, "one more", 2)
    assert refused.value.code == "queue_full"
    assert refused.value.details["waiting"] == ids
    assert all(f"#{i}" in refused.value.message for i in ids)
    await platform.service.submit_prompt(BOB, "someone else is fine", 2)


async def test_queue_limit_holds_under_concurrent_submits(platform: Any) -> None:
    results = await asyncio.gather(
        *(platform.service.submit_prompt(ALICE, f"cat {i}", 2) for i in range(6)),
        return_exceptions=True,
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, Refusal)]
    assert len(accepted) == platform.settings.limits.max_queued_per_user
    assert len(refused) == 6 - len(accepted)


# ----- pick -------------------------------------------------------------------------


async def _history(platform: Any) -> list[tuple[int, int]]:
    async with platform.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT user_id, image_index FROM choice_history ORDER BY id")
        )
        return [tuple(r) for r in rows]


async def test_pick_repick_and_double_click(platform: Any, generator: Any) -> None:
    gen = await make_done_generation(platform, generator)
    first = await platform.service.record_choice(gen, ALICE, 2)
    assert first.changed and first.previous is None and first.is_requester and first.pickers == 1

    again = await platform.service.record_choice(gen, ALICE, 2)
    assert not again.changed and again.previous == Vote.of(2)
    assert await count(platform, "choice_history") == 1

    changed = await platform.service.record_choice(gen, ALICE, 0)
    assert changed.changed and changed.previous == Vote.of(2)
    assert await count(platform, "choices") == 1
    assert [index for _, index in await _history(platform)] == [2, 0]


async def test_each_member_has_their_own_pick(platform: Any, generator: Any) -> None:
    gen = await make_done_generation(platform, generator, user=str(ALICE))
    await platform.service.record_choice(gen, ALICE, 1)
    other = await platform.service.record_choice(gen, BOB, 3)
    assert not other.is_requester and other.pickers == 2
    assert await count(platform, "choices") == 2


async def test_concurrent_double_clicks_record_one_pick(platform: Any, generator: Any) -> None:
    gen = await make_done_generation(platform, generator)
    results = await asyncio.gather(*(platform.service.record_choice(gen, BOB, 1) for _ in range(8)))
    assert sum(r.changed for r in results) == 1
    assert await count(platform, "choice_history") == 1


async def test_a_members_first_click_creates_them_and_records_the_pick(
    platform: Any, generator: Any
) -> None:
    gen = await make_done_generation(platform, generator, user=str(ALICE))
    assert await count(platform, "users") == 1
    first = await platform.service.record_choice(gen, BOB, 2)  # bob was never seen before
    assert first.changed and first.previous is None and not first.is_requester
    assert first.pickers == 1
    async with platform.engine.connect() as conn:
        member = (
            await conn.execute(
                text("SELECT id, banned FROM users WHERE external_id = :id"),
                {"id": BOB.external_id},
            )
        ).one()
    assert not member.banned
    assert await _history(platform) == [(member.id, 2)]
    assert await count(platform, "choices") == 1
    stats = await platform.service.stats(BOB)
    assert stats.members == 2 and stats.picks == 1 and stats.member_picks == 1
    again = await platform.service.record_choice(gen, BOB, 2)  # now a known member
    assert not again.changed and again.previous == Vote.of(2) and again.pickers == 1


async def test_concurrent_first_clicks_of_one_member_create_one_member(
    platform: Any, generator: Any
) -> None:
    gens = [await make_done_generation(platform, generator, prompt=f"cat {i}") for i in range(2)]
    clicks = [platform.service.record_choice(gens[k % 2], BOB, k % 4) for k in range(8)]
    results = await asyncio.gather(*clicks)
    assert await count(platform, f"users WHERE external_id = '{BOB.external_id}'") == 1
    assert await count(platform, "choices") == 2  # one pick per generation
    assert await count(platform, "choice_history") == sum(r.changed for r in results)


async def test_a_first_click_that_loses_the_race_to_create_its_member_still_counts(
    platform: Any, generator: Any
) -> None:
    """Another first click of the same member inserts the row after this one looked."""
    gen = await make_done_generation(platform, generator, user=str(ALICE))
    async with platform.engine.connect() as other:
        await other.execute(
            text("INSERT INTO users (frontend, external_id) VALUES ('discord', :id)"),
            {"id": BOB.external_id},
        )  # not committed yet: the click's insert waits for it
        click = asyncio.create_task(platform.service.record_choice(gen, BOB, 1))
        await eventually(lambda: _waiting_on_a_lock(platform))
        await other.commit()
    result = await click
    assert result.changed and result.pickers == 1
    assert await count(platform, "choices") == 1
    assert await count(platform, f"users WHERE external_id = '{BOB.external_id}'") == 1


async def _waiting_on_a_lock(platform: Any) -> bool:
    async with platform.engine.connect() as conn:
        return bool(
            await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            )
        )


async def test_stale_and_invalid_picks_are_refused(platform: Any, generator: Any) -> None:
    gen = await make_done_generation(platform, generator, n=2)
    cases = [(gen + 100, 0, "gone"), (gen, 2, "bad_index"), (gen, -1, "bad_index")]
    for generation_id, index, code in cases:
        with pytest.raises(Refusal) as refused:
            await platform.service.record_choice(generation_id, BOB, index)
        assert refused.value.code == code
    waiting = await platform.service.submit_prompt(BOB, "not yet", 2)
    with pytest.raises(Refusal, match="not ready"):
        await platform.service.record_choice(waiting.generation_id, BOB, 0)
    assert await count(platform, "choices") == 0
    assert await count(platform, "users") == 2  # alice and bob, who submitted


async def test_failed_generations_and_withheld_images_cannot_be_picked(
    platform: Any, generator: Any
) -> None:
    gen = await make_done_generation(platform, generator, n=2)
    async with platform.engine.begin() as conn:
        await conn.execute(text("UPDATE images SET nsfw = true WHERE index = 1"))
    with pytest.raises(Refusal, match="withheld"):
        await platform.service.record_choice(gen, BOB, 1)
    view = await platform.service.get_generation(gen)
    assert [i.index for i in view.images] == [0] and view.withheld == 1

    async with platform.engine.begin() as conn:
        await conn.execute(text("UPDATE generations SET status = 'failed'"))
    with pytest.raises(Refusal, match="failed"):
        await platform.service.record_choice(gen, BOB, 0)


async def test_banned_members_picks_are_not_recorded(platform: Any, generator: Any) -> None:
    gen = await make_done_generation(platform, generator)
    await platform.service.ban_user(BOB)
    with pytest.raises(Refusal, match="banned"):
        await platform.service.record_choice(gen, BOB, 0)
    assert await count(platform, "choices") == 0


# ----- stats and data requests ------------------------------------------------------


async def test_stats_count_what_was_recorded(platform: Any, generator: Any) -> None:
    gen = await make_done_generation(platform, generator, n=3)
    await platform.service.record_choice(gen, ALICE, 0)
    await platform.service.record_choice(gen, ALICE, 1)
    await platform.service.record_choice(gen, BOB, 2)
    await platform.service.submit_prompt(BOB, "waiting", 2)
    stats = await platform.service.stats(ALICE)
    assert stats.members == 2 and stats.images == 3
    assert stats.generations == {"queued": 1, "running": 0, "done": 1, "failed": 0}
    assert stats.picks == 2 and stats.requester_picks == 1 and stats.repicks == 1
    assert stats.member_generations == 1 and stats.member_picks == 1


async def test_forget_user_deletes_their_prompts_picks_and_files(
    platform: Any, generator: Any
) -> None:
    own = await make_done_generation(platform, generator, user=str(ALICE), prompt="alice's")
    others = await make_done_generation(platform, generator, user=str(BOB), prompt="bob's")
    await platform.service.record_choice(own, BOB, 1)  # bob's pick on alice's prompt
    await platform.service.record_choice(others, ALICE, 0)
    await platform.service.record_choice(others, BOB, 2)
    files = [i.storage_key for i in (await platform.service.get_generation(own)).images]

    done = await platform.service.forget_user(ALICE)

    assert done.generations == 1 and done.picks == 1
    assert sorted(done.files) == sorted(files)
    assert not any([await platform.storage.exists(k) for k in files])
    with pytest.raises(Refusal, match="no longer exists"):
        await platform.service.get_generation(own)
    assert await count(platform, "choices") == 1  # bob's pick on his own prompt
    assert await count(platform, "choice_history WHERE user_id = 1") == 0
    async with platform.engine.connect() as conn:
        forgotten = await conn.scalar(
            text("SELECT forgotten_at IS NOT NULL FROM users WHERE external_id = 'alice'")
        )
    assert forgotten


async def test_undelivered_lists_finished_generations_of_one_frontend(
    platform: Any, generator: Any
) -> None:
    note = {"where": "here"}
    cli = await make_done_generation(platform, generator, user="cli:alice", delivery=note)
    discord = await make_done_generation(platform, generator, user="discord:42", delivery=note)
    await make_done_generation(platform, generator, user="discord:43")  # nowhere to answer
    assert await platform.service.undelivered(UserRef.parse("cli:x").frontend) == [cli]
    assert await platform.service.mark_delivered(cli)
    assert not await platform.service.mark_delivered(cli)
    assert await platform.service.undelivered(UserRef.parse("cli:x").frontend) == []
    assert await platform.service.undelivered(BOB.frontend) == [discord]


async def test_reroll_is_a_new_generation_with_new_seeds_for_the_clicker(
    platform: Any, generator: Any
) -> None:
    platform.settings.generator.negative_prompt = "blurry"
    original = await make_done_generation(platform, generator, user=str(ALICE), n=3)
    again = await platform.service.reroll(original, BOB, delivery={"where": "here"})
    old = await platform.service.get_generation(original)
    new = await platform.service.get_generation(again.generation_id)
    assert new.prompt == old.prompt and new.negative_prompt == old.negative_prompt == "blurry"
    assert new.n_images == 3 and new.requested_by == BOB
    assert new.params["seeds"] != old.params["seeds"] and new.delivery == {"where": "here"}
    with pytest.raises(Refusal, match="no longer exists"):
        await platform.service.reroll(original + 99, BOB)


async def test_reroll_checks_todays_rules(platform: Any, generator: Any) -> None:
    original = await make_done_generation(platform, generator, user=str(ALICE), prompt="a gory cat")
    platform.settings.limits.blocked_words = ["gory"]  # blocked since it was submitted
    platform.service = type(platform.service)(
        platform.sessions, platform.settings, platform.storage
    )
    with pytest.raises(Refusal, match="blocked word") as refused:
        await platform.service.reroll(original, BOB)
    assert refused.value.code == "blocked"

    platform.settings.limits.blocked_words = []
    platform.service = type(platform.service)(
        platform.sessions, platform.settings, platform.storage
    )
    await platform.service.ban_user(BOB, "spam")
    before = await _written(platform)
    with pytest.raises(Refusal, match="banned") as refused:
        await platform.service.reroll(original, BOB)
    assert refused.value.code == "banned"
    assert await _written(platform) == before
    await platform.service.reroll(original, ALICE)  # the rules allow it again


async def test_delivery_notes_merge_and_audit_is_written(platform: Any) -> None:
    submitted = await platform.service.submit_prompt(ALICE, "a cat", 2, delivery={"a": 1})
    await platform.service.update_delivery(submitted.generation_id, b="2")
    assert (await platform.service.get_generation(submitted.generation_id)).delivery == {
        "a": 1,
        "b": "2",
    }
    await platform.service.audit(BOB, "ban", target="discord:9", allowed=False, reason="spam")
    async with platform.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT actor, action, target, allowed, details FROM admin_actions")
            )
        ).one()
    assert tuple(row) == (str(BOB), "ban", "discord:9", False, {"reason": "spam"})


async def test_queue_status_counts_and_reports_the_last_failure(
    platform: Any, generator: Any
) -> None:
    await make_done_generation(platform, generator)
    failing = await platform.service.submit_prompt(BOB, "a dog", 2)
    async with platform.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE generations SET status = 'failed', error = 'boom', finished_at = now() "
                "WHERE id = :id"
            ),
            {"id": failing.generation_id},
        )
    await platform.service.submit_prompt(BOB, "a bird", 2)
    status = await platform.service.queue_status()
    assert (status.queued, status.running, status.workers) == (1, 0, 0)
    assert status.last_failure == (failing.generation_id, "boom")
    assert status.oldest_queued_at is not None and status.last_done_at is not None
