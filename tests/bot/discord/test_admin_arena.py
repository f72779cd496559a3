"""/admin arena and /admin leaderboard through the fake Discord: answers, plot, audit."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image
from sqlalchemy import text

from tests.support.arena_rows import add_set, add_users, add_version
from tests.support.discord_bot import ADMIN, ALICE, bot_running, private


async def test_admins_run_the_arena_and_see_the_leaderboard(bot_platform: Any, fake: Any) -> None:
    adapter = await add_version(bot_platform)

    async def arena(name: str, user: int = ADMIN, **options: Any) -> str:
        it = await fake.slash_command(
            "admin", options, group="arena", subcommand=name, user_id=user
        )
        return await private(fake, it, user)

    async with bot_running(bot_platform, fake):
        assert "Only prefloop admins" in await arena("status", user=ALICE)
        assert "No comparison has been opened yet" in await arena("status")
        opened = await arena("start", version=str(adapter), share=0.5)
        assert f"Opened comparison 1: adapter #{adapter} vs base." in opened
        assert "share 50% of /imagine requests (this comparison)" in opened
        assert "is already open" in await arena("start", version="base")

        requester, other = await add_users(bot_platform, 2)
        for k in range(5):
            picks = {requester: 1 if k < 4 else 0, other: 1 if k < 3 else 0}
            await add_set(bot_platform, requester, [None, adapter], picks, comparison_id=1)
        status = await arena("status")
        assert "5 mixed sets made, 5 judged, 10 picks" in status
        assert "5 judged sets, contender's win rate 80.0%" in status

        it = await fake.slash_command("admin", subcommand="leaderboard", user_id=ADMIN)
        board = await private(fake, it, ADMIN)
        assert "10 picks on 5 mixed sets" in board
        assert f"1. adapter #{adapter}: +" in board and "2. base (serving): +0 [+0, +0]" in board
        assert f"base vs adapter #{adapter}: 10 comparisons, base won 30.0%" in board
        assert "No HPS is active: no live agreement." in board
        (answer,) = [m for m in it.messages() if m.attachments]
        assert answer.ephemeral and [a.filename for a in answer.attachments] == ["ratings.png"]
        with Image.open(io.BytesIO(answer.attachments[0].data)) as plot:
            assert plot.format == "PNG"

        stopped = await arena("stop")
        assert "Stopped comparison 1" in stopped and "decision: stopped by discord:" in stopped
        assert "No comparison is open." in await arena("stop")

    async with bot_platform.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT action, target, allowed FROM admin_actions ORDER BY id")
        )
        actions = [tuple(row) for row in rows]
    assert actions == [
        ("arena-status", None, False),
        ("arena-status", None, True),
        ("arena-start", "1", True),
        ("arena-status", None, True),
        ("leaderboard", None, True),
        ("arena-stop", "1", True),
        ("arena-stop", None, True),
    ]
    reports = list((bot_platform.settings.data_dir / "reports").glob("leaderboard-*/report.md"))
    assert len(reports) == 1
