"""/admin rater and the agreement in /admin stats through the fake Discord: admins only,
privately, audited; a member's own /stats shows no one's weight."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tests.support.discord_bot import ADMIN, ALICE, BOB, bot_running, private
from tests.support.raters import add_member, careful_and_clicker


async def test_admins_see_a_raters_weight_members_never(bot_platform: Any, fake: Any) -> None:
    alice = await add_member(bot_platform, f"discord:{ALICE}")
    bob = await add_member(bot_platform, f"discord:{BOB}")  # clicks at random
    carol = await add_member(bot_platform, "cli:carol")
    await careful_and_clicker(bot_platform, [alice, carol], bob)

    async def rater(user: int, caller: int = ADMIN) -> tuple[Any, str]:
        it = await fake.slash_command("admin", {"user": user}, subcommand="rater", user_id=caller)
        return it, await private(fake, it, caller)

    async with bot_running(bot_platform, fake):
        it, answer = await rater(BOB)
        assert all(m.ephemeral for m in it.messages())
        assert f"<@{BOB}> (discord:{BOB}): weight 0.00" in answer
        assert "0 of 6 right" in answer and "a random clicker: 0.75" in answer
        _, careful = await rater(ALICE)
        assert f"<@{ALICE}> (discord:{ALICE}): weight 0.98" in careful
        assert "6 of 6 right" in careful and "agrees with 50% of the other votes" in careful

        _, refused = await rater(BOB, caller=ALICE)
        assert "Only prefloop admins" in refused and "weight" not in refused

        it = await fake.slash_command("stats", user_id=ALICE)
        own = await private(fake, it, ALICE)
        assert "**You**" in own  # their numbers, and the dataset's
        assert "weight" not in own and "agree" not in own and "0.98" not in own

        it = await fake.slash_command("admin", subcommand="stats", user_id=ADMIN)
        numbers = await private(fake, it, ADMIN)
        assert "agreement on sets voted by 2+ members: pairwise 33.3%" in numbers
        assert "• week of 2025-12-29: pairwise 33.3%" in numbers

    async with bot_platform.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT actor, action, target, allowed FROM admin_actions ORDER BY id")
        )
        actions = [tuple(row) for row in rows]
    assert actions == [
        (f"discord:{ADMIN}", "rater", f"discord:{BOB}", True),
        (f"discord:{ADMIN}", "rater", f"discord:{ALICE}", True),
        (f"discord:{ALICE}", "rater", f"discord:{BOB}", False),
        (f"discord:{ADMIN}", "stats", None, True),
    ]
