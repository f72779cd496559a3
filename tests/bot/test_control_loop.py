"""Control sets end to end: drawn for members who rate others, made worse by the worker,
voted on through the service like any set, scored, and turned into rater weights."""

from __future__ import annotations

import random
from typing import Any

from bot.domain import GenerationOptions, UserRef
from bot.generation.runner import GenerationRunner
from tests.support.database import sql

REQUESTER = UserRef.parse("cli:requester")
CAREFUL = UserRef.parse("cli:careful")
CLICKER = UserRef.parse("cli:clicker")
ROUNDS = 3


async def _made(platform: Any, runner: GenerationRunner, user: UserRef, seed: int) -> Any:
    """A finished set of ``user``'s: its id and control columns (members never see them)."""
    submitted = await platform.service.submit_prompt(
        user, "a red cat", 4, GenerationOptions(seed=seed)
    )
    assert await runner.run(submitted.generation_id) == "done"
    found = await sql(
        platform,
        "SELECT id, control_kind, control_worse FROM generations WHERE id = :g",
        g=submitted.generation_id,
    )
    return found.one()


async def test_control_sets_are_mixed_in_scored_and_weigh_the_raters(
    platform: Any, generator: Any
) -> None:
    settings = platform.settings
    settings.controls.share = 1.0  # every set of a member who rates others
    settings.controls.min_rated_others = 1
    settings.controls.kinds = ["blur", "invert"]
    settings.limits.max_queued_per_user = 100
    platform.service.control_rng = random.Random(3)
    runner = GenerationRunner(platform.sessions, platform.storage, generator)

    # The requester has rated no one else's set: their set is plain.
    first = await _made(platform, runner, REQUESTER, seed=1)
    assert first.control_kind is None
    for member in (CAREFUL, CLICKER):  # both vote on another member's set ...
        await platform.service.record_choice(first.id, member, 0)

    # ... so their own requests become control sets, which look like any other set.
    for round_ in range(ROUNDS):
        for member, careful in ((CAREFUL, True), (CLICKER, False)):
            view = await _made(platform, runner, member, seed=100 * round_ + careful)
            assert view.control_kind in {"blur", "invert"} and view.control_worse is not None
            worse = view.control_worse
            vote = (worse + 1) % 4 if careful else worse  # the clicker picks the spoiled one
            await platform.service.record_choice(view.id, member, vote)

    careful = await platform.service.raters.rater(CAREFUL)
    clicker = await platform.service.raters.rater(CLICKER)
    assert (careful.reliability.controls, careful.reliability.correct) == (ROUNDS, ROUNDS)
    assert (clicker.reliability.controls, clicker.reliability.correct) == (ROUNDS, 0)
    prior = settings.raters.prior_careful
    # Three spoiled picks where a random click is right 3 times in 4 sink the clicker far
    # below the prior (their agreement on the shared set lifts them a little).
    assert clicker.weight < 0.2 < prior < careful.weight
