"""`prefloop pick GEN tie|none|K` and `prefloop stats` with every kind of vote."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.support.cli import platform_env, prefloop
from tests.support.database import count, make_done_generation


async def test_pick_records_ties_none_and_picks_and_explains_bad_votes(
    platform: Any, generator: Any, tmp_path: Path
) -> None:
    gen = await make_done_generation(platform, generator, n=2, user="cli:alice")
    env = platform_env(platform, tmp_path / "data")

    async def pick(*args: str) -> Any:
        return await asyncio.to_thread(prefloop, "pick", str(gen), *args, env=env)

    tie = await pick("tie", "--user", "alice")
    assert tie.returncode == 0, tie.stderr
    assert f"you said no favourite for generation {gen}: no image is better" in tie.stdout
    again = await pick("TIE", "--user", "alice")
    assert f"you already said no favourite for generation {gen}" in again.stdout
    none = await pick("none", "--user", "alice")
    assert "from no favourite to none are good" in none.stdout
    picked = await pick("2", "--user", "alice")
    assert f"you changed your vote for generation {gen} from none are good to image 2" in (
        picked.stdout
    )
    bob = await pick("none", "--user", "bob")
    assert f"you said none are good for generation {gen}: none of them are good" in bob.stdout

    for bad, says in (
        ("x", "'x' is not a vote: give an image number (1 to 4), `tie`"),
        ("0", "There is no image 0; images are numbered 1 to 4."),
        ("5", "There is no image 5; images are numbered 1 to 4."),
        ("3", "There is no image 3 here; pick 1 to 2."),
    ):
        refused = await pick(bad, "--user", "alice")
        assert refused.returncode == 1 and says in refused.stderr, (bad, refused.stderr)

    async with platform.engine.connect() as conn:
        history = (
            await conn.execute(text("SELECT kind, image_index FROM choice_history ORDER BY id"))
        ).all()
    assert [tuple(r) for r in history] == [
        ("tie", None),
        ("none", None),
        ("pick", 1),
        ("none", None),
    ]
    assert await count(platform, "choices") == 2  # the refused votes changed nothing

    shown = await asyncio.to_thread(prefloop, "stats", "--json", "--user", "bob", env=env)
    stats = json.loads(shown.stdout)
    assert (stats["picks"], stats["ties"], stats["nones"], stats["repicks"]) == (1, 0, 1, 2)
    assert (stats["member_picks"], stats["member_ties"], stats["member_nones"]) == (0, 0, 1)
