"""Which requests become control sets: the share, members who rate others, mixed sets first."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from sqlalchemy import text

from bot.domain import UserRef
from tests.support.arena_rows import add_comparison, add_set, add_version

ALICE = UserRef.parse("cli:alice")
BOB = UserRef.parse("cli:bob")


def _controls(platform: Any, share: float, *, min_rated_others: int = 0, seed: int = 0) -> None:
    platform.settings.controls.share = share
    platform.settings.controls.min_rated_others = min_rated_others
    platform.service.control_rng = random.Random(seed)
    platform.settings.limits.max_queued_per_user = 100


async def _row(platform: Any, generation_id: int) -> Any:
    async with platform.engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT control_kind, control_worse, control_best, control_by, comparison_id, "
                "params FROM generations WHERE id = :g"
            ),
            {"g": generation_id},
        )
        return result.one()


async def _submit(platform: Any, user: UserRef = ALICE, n: int = 4) -> Any:
    submitted = await platform.service.submit_prompt(user, "a red cat", n)
    return await _row(platform, submitted.generation_id)


async def _member_id(platform: Any, user: UserRef) -> int:
    async with platform.engine.connect() as connection:
        return int(
            await connection.scalar(
                text("SELECT id FROM users WHERE external_id = :e"), {"e": user.external_id}
            )
        )


async def test_share_one_makes_every_set_a_control_set_with_its_plan_in_the_params(
    platform: Any,
) -> None:
    _controls(platform, 1.0)
    seen: Counter[str] = Counter()
    worse: set[int] = set()
    for _ in range(24):
        row = await _submit(platform)
        plan = row.params["control"]
        assert row.control_kind == plan["kind"] and row.control_worse == plan["worse"]
        assert row.control_best is None and row.control_by is None and row.comparison_id is None
        assert 0 <= row.control_worse < 4
        if plan["kind"] == "wrong_prompt":
            assert plan["prompt"] in platform.settings.controls.wrong_prompts
        else:
            assert plan["prompt"] is None
        seen[plan["kind"]] += 1
        worse.add(row.control_worse)
    assert set(seen) == {"blur", "noise", "invert", "wrong_prompt"}  # every configured kind
    assert worse == {0, 1, 2, 3}  # any image may be the worse one

    platform.settings.controls.kinds = ["invert"]
    assert (await _submit(platform, n=2)).control_kind == "invert"  # only the kinds configured


async def test_share_zero_never_and_a_share_between_sometimes(platform: Any) -> None:
    _controls(platform, 0.0)
    for _ in range(10):
        row = await _submit(platform)
        assert row.control_kind is None and "control" not in row.params

    _controls(platform, 0.5, seed=3)
    kinds = [(await _submit(platform)).control_kind for _ in range(40)]
    assert 5 < sum(kind is not None for kind in kinds) < 35


async def test_a_member_gets_control_sets_once_they_voted_on_others_sets(platform: Any) -> None:
    _controls(platform, 1.0, min_rated_others=2)
    assert (await _submit(platform)).control_kind is None  # alice never voted
    alice = await _member_id(platform, ALICE)
    await add_set(platform, alice, [None, None], {alice: 0})  # her own set does not count
    bob_plain = await _submit(platform, BOB)
    assert bob_plain.control_kind is None
    bob = await _member_id(platform, BOB)
    await add_set(platform, bob, [None, None], {alice: 1})
    assert (await _submit(platform)).control_kind is None  # one of two
    await add_set(platform, bob, [None, None], {alice: 0, bob: 1})
    assert (await _submit(platform)).control_kind is not None  # two sets of someone else
    assert (await _submit(platform, BOB)).control_kind is None  # bob voted on his own only


async def test_a_mixed_set_is_never_a_control_set(platform: Any) -> None:
    _controls(platform, 1.0)
    platform.settings.arena.share = 1.0
    platform.service.mixing_rng = random.Random(0)
    version = await add_version(platform)
    comparison = await add_comparison(platform, None, version)
    row = await _submit(platform)
    assert row.comparison_id == comparison  # the arena draws first
    assert row.control_kind is None and "control" not in row.params
    platform.settings.arena.share = 0.0
    row = await _submit(platform)
    assert row.comparison_id is None and row.control_kind is not None


async def test_a_reroll_of_a_control_set_draws_afresh(platform: Any) -> None:
    _controls(platform, 1.0)
    submitted = await platform.service.submit_prompt(ALICE, "a red cat", 2)
    _controls(platform, 0.0)
    again = await platform.service.reroll(submitted.generation_id, ALICE)
    assert (await _row(platform, submitted.generation_id)).control_kind is not None
    assert (await _row(platform, again.generation_id)).control_kind is None
