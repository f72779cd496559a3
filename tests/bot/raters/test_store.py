"""The raters' view admins get from the service: weights, evidence, order, one member."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain import Refusal, UserRef
from tests.support.arena_rows import add_set
from tests.support.raters import FOUR, add_member, careful_and_clicker


async def test_a_random_clicker_weighs_little_and_careful_raters_much(platform: Any) -> None:
    alice = await add_member(platform, "cli:alice")
    bob = await add_member(platform, "cli:bob")
    mallory = await add_member(platform, "discord:666")
    newcomer = await add_member(platform, "cli:newcomer")
    await careful_and_clicker(platform, [alice, bob], mallory)
    await add_set(platform, newcomer, FOUR, {newcomer: 0})  # voted alone: no evidence
    await add_member(platform, "cli:lurker")  # never voted: not a rater

    service = platform.service.raters
    found = await service.raters()
    assert [v.member for v in found] == ["discord:666", "cli:newcomer", "cli:alice", "cli:bob"]
    clicker, fresh, careful = found[0], found[1], found[2]
    assert clicker.weight < 0.01
    assert careful.weight > 0.95
    assert fresh.weight == pytest.approx(0.8)  # the prior, settings.raters.prior_careful
    assert (clicker.reliability.controls, clicker.reliability.correct) == (6, 0)
    assert clicker.reliability.chance == pytest.approx(0.75)
    # Beta(1 + 6, 1 + 0): mean 7/8.
    assert careful.reliability.accuracy is not None
    assert careful.reliability.accuracy.mean == pytest.approx(7 / 8)
    assert careful.votes == 12 and careful.reliability.shared == 6
    # On every ordinary set alice and bob agree and mallory agrees with neither: 1/2 each.
    assert careful.reliability.agreement == pytest.approx(0.5)
    assert clicker.reliability.agreement == pytest.approx(0.0)

    by_votes = await service.raters(sort="votes", limit=2)
    assert [v.votes for v in by_votes] == [12, 12]

    one = await service.rater(UserRef.parse("discord:666"))
    assert one.weight == clicker.weight
    text = "\n".join(one.lines())
    assert "discord:666: weight 0.00" in text and "0 of 6 right" in text
    lurker = await service.rater(UserRef.parse("cli:lurker"))
    assert lurker.votes == 0 and lurker.weight == pytest.approx(0.8)
    with pytest.raises(Refusal, match="cli:nobody has never used prefloop"):
        await service.rater(UserRef.parse("cli:nobody"))
