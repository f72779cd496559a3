"""/admin control mark|unmark|list through the fake Discord: answers, refusals, audit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tests.support.arena_rows import add_set, add_users
from tests.support.database import sql
from tests.support.discord_bot import ADMIN, ALICE, bot_running, private


async def test_admins_mark_and_unmark_control_sets(bot_platform: Any, fake: Any) -> None:
    owner, u1, u2 = await add_users(bot_platform, 3)
    generation = await add_set(bot_platform, owner, [None, None, None], {u1: 1, u2: 2})
    corrupted = await add_set(bot_platform, owner, [None, None], {})
    await sql(
        bot_platform,
        "UPDATE generations SET control_kind = 'invert', control_worse = 1 WHERE id = :g",
        g=corrupted,
    )

    async def control(name: str, user: int = ADMIN, **options: Any) -> str:
        it = await fake.slash_command(
            "admin", options, group="control", subcommand=name, user_id=user
        )
        return await private(fake, it, user)

    async with bot_running(bot_platform, fake):
        assert "Only prefloop admins" in await control(
            "mark", user=ALICE, generation=generation, best=2
        )
        assert "is already a control set (invert" in await control(
            "mark", generation=corrupted, best=1
        )
        assert "there is no image 4" in await control("mark", generation=generation, worse=4)
        marked = await control("mark", generation=generation, worse=1, best=2)
        assert (
            f"Marked #{generation} (marked by discord:{ADMIN}; image 1 worse, image 2 best"
            in marked
        )
        assert "2 votes, 2 scored, 1 right" in marked  # the votes cast before the mark
        listed = await control("list")
        assert f"#{corrupted} (invert; image 2 worse; done): 0 votes" in listed
        assert f"#{generation} (marked by discord:{ADMIN}" in listed
        assert "no longer exists" in await control("unmark", generation=corrupted + 1)
        unmarked = await control("unmark", generation=generation)
        assert f"Unmarked #{generation}; it was #{generation} (marked by" in unmarked
        assert "is not marked" in await control("unmark", generation=generation)

    async with bot_platform.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT actor, action, target, allowed FROM admin_actions ORDER BY id")
        )
        actions = [tuple(row) for row in rows]
    assert actions == [
        (f"discord:{ALICE}", "control-mark", str(generation), False),
        (f"discord:{ADMIN}", "control-mark", str(generation), True),
        (f"discord:{ADMIN}", "control-list", None, True),
        (f"discord:{ADMIN}", "control-unmark", str(generation), True),
    ]
    async with bot_platform.engine.connect() as connection:
        left = await connection.scalar(
            text("SELECT count(*) FROM generations WHERE control_kind IS NOT NULL")
        )
    assert left == 1  # the corrupted set stays a control set
