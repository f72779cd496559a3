"""Votes besides picks: "No favourite" (a tie) and "None are good", through the service."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from bot.db.models import VoteKind
from bot.domain import Refusal, UserRef, Vote
from tests.support.database import count, make_done_generation

ALICE = UserRef.parse("cli:alice")
BOB = UserRef.parse("discord:123456789012345678")
TIE, NONE = Vote(VoteKind.tie), Vote(VoteKind.none)


async def _history(platform: Any) -> list[tuple[str, int | None]]:
    async with platform.engine.connect() as conn:
        rows = await conn.execute(text("SELECT kind, image_index FROM choice_history ORDER BY id"))
        return [(kind, index) for kind, index in rows]


async def _current(platform: Any) -> list[tuple[str, int | None]]:
    async with platform.engine.connect() as conn:
        rows = await conn.execute(text("SELECT kind, image_index FROM choices ORDER BY id"))
        return [(kind, index) for kind, index in rows]


@pytest.mark.parametrize("kind", [VoteKind.tie, VoteKind.none])
async def test_a_tie_or_none_is_recorded_once_however_often_it_is_sent(
    platform: Any, generator: Any, kind: VoteKind
) -> None:
    gen = await make_done_generation(platform, generator, n=2)
    first = await platform.service.record_choice(gen, ALICE, kind)
    assert first.vote == Vote(kind) and first.vote.index is None
    assert first.changed and first.previous is None and first.is_requester
    assert first.pickers == 1
    again = await platform.service.record_choice(gen, ALICE, kind)
    assert not again.changed and again.previous == Vote(kind) and again.pickers == 1
    assert await _current(platform) == [(kind.value, None)]
    assert await _history(platform) == [(kind.value, None)]
    assert (await platform.service.get_generation(gen)).pickers == 1


async def test_re_votes_pick_tie_none_pick_keep_every_change(platform: Any, generator: Any) -> None:
    gen = await make_done_generation(platform, generator)
    steps = [2, VoteKind.tie, VoteKind.tie, VoteKind.none, Vote(VoteKind.pick, 2), 0]
    results = [await platform.service.record_choice(gen, BOB, step) for step in steps]
    assert [r.changed for r in results] == [True, True, False, True, True, True]
    assert [r.previous for r in results] == [None, Vote.of(2), TIE, TIE, NONE, Vote.of(2)]
    assert all(r.pickers == 1 for r in results)  # one member, however they change their mind
    assert await _current(platform) == [("pick", 0)]
    assert await _history(platform) == [
        ("pick", 2),
        ("tie", None),
        ("none", None),
        ("pick", 2),
        ("pick", 0),
    ]


async def test_each_member_has_their_own_vote_and_all_are_counted(
    platform: Any, generator: Any
) -> None:
    gen = await make_done_generation(platform, generator, user=str(ALICE))
    await platform.service.record_choice(gen, ALICE, VoteKind.none)
    other = await platform.service.record_choice(gen, BOB, VoteKind.tie)
    assert other.changed and not other.is_requester and other.pickers == 2
    assert (await platform.service.get_generation(gen)).pickers == 2


@pytest.mark.parametrize("kind", [VoteKind.tie, VoteKind.none])
async def test_concurrent_double_clicks_agree_on_one_vote(
    platform: Any, generator: Any, kind: VoteKind
) -> None:
    gen = await make_done_generation(platform, generator)
    await platform.service.record_choice(gen, BOB, 1)  # a pick first: the clicks change it
    clicks = [platform.service.record_choice(gen, BOB, kind) for _ in range(8)]
    results = await asyncio.gather(*clicks)
    assert sum(r.changed for r in results) == 1
    assert await _history(platform) == [("pick", 1), (kind.value, None)]


async def test_a_first_tie_of_a_new_member_creates_them(platform: Any, generator: Any) -> None:
    gen = await make_done_generation(platform, generator, user=str(ALICE))
    clicks = [platform.service.record_choice(gen, BOB, VoteKind.tie) for _ in range(4)]
    results = await asyncio.gather(*clicks)
    assert sum(r.changed for r in results) == 1
    assert await count(platform, f"users WHERE external_id = '{BOB.external_id}'") == 1
    assert await _current(platform) == [("tie", None)]


@pytest.mark.parametrize("kind", [VoteKind.tie, VoteKind.none])
async def test_refusals_apply_to_ties_and_none_votes(
    platform: Any, generator: Any, kind: VoteKind
) -> None:
    gen = await make_done_generation(platform, generator, n=2)
    with pytest.raises(Refusal) as gone:
        await platform.service.record_choice(gen + 100, BOB, kind)
    assert gone.value.code == "gone"
    waiting = await platform.service.submit_prompt(ALICE, "not yet", 2)
    with pytest.raises(Refusal) as not_ready:
        await platform.service.record_choice(waiting.generation_id, BOB, kind)
    assert not_ready.value.code == "not_ready" and "not ready" in not_ready.value.message

    await platform.service.ban_user(BOB)
    with pytest.raises(Refusal) as banned:
        await platform.service.record_choice(gen, BOB, kind)
    assert banned.value.code == "banned"
    await platform.service.unban_user(BOB)

    async with platform.engine.begin() as conn:  # a withheld image stops only its pick
        await conn.execute(text("UPDATE images SET nsfw = true WHERE index = 1"))
    assert (await platform.service.record_choice(gen, BOB, kind)).changed
    async with platform.engine.begin() as conn:
        await conn.execute(
            text("UPDATE generations SET status = 'failed' WHERE id = :g"), {"g": gen}
        )
    with pytest.raises(Refusal) as failed:
        await platform.service.record_choice(gen, ALICE, kind)
    assert failed.value.code == "failed"
    assert await _current(platform) == [(kind.value, None)]  # bob's, from before it failed


async def test_a_bare_pick_kind_is_refused_and_bad_words_are_explained(
    platform: Any, generator: Any
) -> None:
    gen = await make_done_generation(platform, generator, n=2)
    with pytest.raises(Refusal) as bare:
        await platform.service.record_choice(gen, BOB, VoteKind.pick)
    assert bare.value.code == "bad_index" and "which image" in bare.value.message
    assert Vote.parse(" TIE ") == TIE and Vote.parse("none") == NONE
    assert Vote.parse("3") == Vote(VoteKind.pick, 2)
    for word in ("x", "-1", "1.5", "", "²"):
        with pytest.raises(Refusal) as bad:
            Vote.parse(word)
        assert bad.value.code == "bad_vote" and "`tie`" in bad.value.message, word
    assert await count(platform, "choices") == 0


async def test_stats_count_each_kind_overall_and_for_the_member(
    platform: Any, generator: Any
) -> None:
    gen = await make_done_generation(platform, generator, n=3, user=str(ALICE))
    other = await make_done_generation(platform, generator, n=2, user=str(BOB), prompt="dog")
    carol = UserRef.parse("cli:carol")
    await platform.service.record_choice(gen, ALICE, 0)
    await platform.service.record_choice(gen, ALICE, VoteKind.tie)  # a re-vote
    await platform.service.record_choice(gen, BOB, VoteKind.none)
    await platform.service.record_choice(other, ALICE, VoteKind.none)
    await platform.service.record_choice(other, BOB, 1)
    await platform.service.record_choice(gen, carol, 2)
    stats = await platform.service.stats(ALICE)
    assert (stats.picks, stats.ties, stats.nones) == (2, 1, 2)
    assert stats.requester_picks == 1 and stats.repicks == 1
    assert (stats.member_picks, stats.member_ties, stats.member_nones) == (0, 1, 1)
    stranger = await platform.service.stats(UserRef.parse("cli:nobody"))
    assert (stranger.member_picks, stranger.member_ties, stranger.member_nones) == (0, 0, 0)
    assert (await platform.service.stats()).member_ties is None


async def test_forget_deletes_every_kind_of_vote(platform: Any, generator: Any) -> None:
    gen = await make_done_generation(platform, generator, user=str(ALICE))
    await platform.service.record_choice(gen, BOB, 1)
    await platform.service.record_choice(gen, BOB, VoteKind.none)
    await platform.service.record_choice(gen, ALICE, VoteKind.tie)
    done = await platform.service.forget_user(BOB)
    assert done.picks == 1  # the current vote
    assert await _current(platform) == [("tie", None)]
    assert await _history(platform) == [("tie", None)]


async def test_only_picks_count_towards_a_retrain_and_the_export_keeps_picks(
    platform: Any, generator: Any, tmp_path: Any
) -> None:
    from bot.export import ExportOptions, Rater, export_dataset
    from bot.retrain.triggers import picks_since_last_run
    from training.data import read_preferences

    gen = await make_done_generation(platform, generator, n=2, user=str(ALICE))
    other = await make_done_generation(platform, generator, n=2, user=str(BOB), prompt="dog")
    await platform.service.record_choice(gen, ALICE, VoteKind.tie)
    await platform.service.record_choice(gen, BOB, VoteKind.none)
    await platform.service.record_choice(other, BOB, 1)
    assert await picks_since_last_run(platform.sessions) == 1

    options = ExportOptions(out=tmp_path / "ds", rater=Rater.all, test_fraction=0.0)
    done = await export_dataset(platform.database_url, platform.storage, platform.settings, options)
    exported = read_preferences(done.out, "all", strict=True)
    assert [(e.prompt, e.chosen) for e in exported] == [("dog", 1)]
