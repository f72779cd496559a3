"""The "No favourite" and "None are good" buttons through the fake Discord, end to end."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from tests.support.discord_bot import (
    ALICE,
    BOB,
    bot_running,
    final_message,
    imagine,
    private,
    private_text,
    worker_running,
)


async def _votes(platform: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(current votes by member, history oldest first) as (kind, image_index)."""
    async with platform.engine.connect() as conn:
        current = await conn.execute(text("SELECT kind, image_index FROM choices ORDER BY user_id"))
        history = await conn.execute(
            text("SELECT kind, image_index FROM choice_history ORDER BY id")
        )
        return [tuple(r) for r in current], [tuple(r) for r in history]


def _rows(message: Any) -> list[list[tuple[str, str]]]:
    """The message's action rows: (custom_id, label) of each button."""
    return [
        [(c["custom_id"], c.get("label", "")) for c in row["components"]]
        for row in message.components
    ]


async def test_the_vote_buttons_sit_on_a_second_row_and_record_ties_and_none(
    bot_platform: Any, fake: Any
) -> None:
    bot_platform.settings.generator.steps = 3
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a lighthouse", count=4)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
        assert _rows(final) == [
            [(f"pf:pick:1:{k}", f"Pick {k + 1}") for k in range(4)] + [("pf:reroll:1", "Reroll")],
            [("pf:tie:1", "No favourite"), ("pf:none:1", "None are good")],
        ]
        assert "No one has voted yet" in final.content

        async def click(custom_id: str, user_id: int) -> str:
            return await private(
                fake, await fake.click(final.id, custom_id, user_id=user_id), user_id
            )

        tie = await fake.click(final.id, "pf:tie:1", user_id=BOB)
        assert "You said no image is better than the others" in await private(fake, tie, BOB)
        assert not private_text(tie, ALICE)  # nobody else sees it
        await fake.wait_for(lambda: "1 member has voted" in fake.message(final.id).content)

        assert "You picked image 3" in await click("pf:pick:1:2", ALICE)  # re-votes
        assert "from image 3 to “No favourite”" in await click("pf:tie:1", ALICE)
        assert "You already said no image is better" in await click("pf:tie:1", ALICE)
        none = await click("pf:none:1", ALICE)
        assert "from “No favourite” to “None are good”: you said none of these are good" in none
        assert "from “None are good” to a pick: image 1" in await click("pf:pick:1:0", ALICE)
        await fake.wait_for(lambda: "2 members have voted" in fake.message(final.id).content)
        public = fake.message(final.id).content
        assert "No favourite" not in public and "None are good" not in public  # who voted what

    current, history = await _votes(bot_platform)
    assert current == [("pick", 0), ("tie", None)]  # alice, bob
    assert history == [("tie", None), ("pick", 2), ("tie", None), ("none", None), ("pick", 0)]
    stats = await bot_platform.service.stats()
    assert (stats.picks, stats.ties, stats.nones, stats.repicks) == (1, 1, 0, 3)


async def test_double_clicks_record_one_vote_and_the_buttons_survive_a_restart(
    bot_platform: Any, fake: Any
) -> None:
    bot_platform.settings.generator.steps = 3
    async with bot_running(bot_platform, fake), worker_running(bot_platform):
        it = await imagine(fake, ALICE, "a castle", count=2)
        final = await fake.wait_for(lambda: final_message(it), timeout=60)
        assert final.custom_ids()[-2:] == ["pf:tie:1", "pf:none:1"]
        clicks = await asyncio.gather(
            fake.click(final.id, "pf:none:1", user_id=BOB),
            fake.click(final.id, "pf:none:1", user_id=BOB),
        )
        answers = [await private(fake, click, BOB) for click in clicks]
        assert sorted(answers) == [
            "You already said none of these are good.",
            "You said none of these are good; click a Pick button or “No favourite” to change "
            "your vote.",
        ]
        await fake.wait_for(lambda: "1 member has voted" in fake.message(final.id).content)
    assert await _votes(bot_platform) == ([("none", None)], [("none", None)])

    async with bot_running(bot_platform, fake):  # a new client, long after the post
        tie = await fake.click(final.id, "pf:tie:1", user_id=BOB)
        assert "from “None are good” to “No favourite”" in await private(fake, tie, BOB)
        first = await fake.click(final.id, "pf:none:1", user_id=ALICE)
        assert "You said none of these are good" in await private(fake, first, ALICE)
        await fake.wait_for(lambda: "2 members have voted" in fake.message(final.id).content)
    current, history = await _votes(bot_platform)
    assert current == [("none", None), ("tie", None)]  # alice, bob
    assert history == [("none", None), ("tie", None), ("none", None)]
