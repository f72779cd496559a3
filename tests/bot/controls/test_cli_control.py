"""`prefloop control mark|unmark|list` as an admin runs them: answers, refusals, audit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.support.arena_rows import add_set, add_users
from tests.support.cli import platform_env, prefloop
from tests.support.database import sql


async def test_admins_mark_list_and_unmark_control_sets(platform: Any, tmp_path: Path) -> None:
    env = platform_env(platform, platform.settings.data_dir)

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(prefloop, "control", *args, env=env, cwd=tmp_path)

    owner, u1, u2 = await add_users(platform, 3)
    generation = await add_set(platform, owner, [None, None, None], {u1: 0, u2: 2})
    corrupted = await add_set(platform, owner, [None, None], {u1: 1})
    await sql(
        platform,
        "UPDATE generations SET control_kind = 'noise', control_worse = 0 WHERE id = :g",
        g=corrupted,
    )

    refused = await run("mark", str(generation))
    assert refused.returncode == 1 and "give --worse K, --best K or both" in refused.stderr
    refused = await run("mark", str(generation), "--worse", "4")
    assert refused.returncode == 1
    assert f"Generation #{generation} has images 1 to 3; there is no image 4." in refused.stderr
    refused = await run("mark", str(generation), "--worse", "2", "--best", "2")
    assert refused.returncode == 1 and "cannot be both the worse and the best" in refused.stderr
    refused = await run("mark", str(corrupted), "--best", "2")
    assert refused.returncode == 1 and "already a control set (noise" in refused.stderr
    refused = await run("mark", "999", "--worse", "1")
    assert refused.returncode == 1 and "Generation #999 no longer exists" in refused.stderr

    marked = await run("mark", str(generation), "--worse", "3")
    assert marked.returncode == 0, marked.stderr
    assert f"marked #{generation} (marked by cli:" in marked.stdout
    assert "image 3 worse; done): 2 votes, 2 scored, 1 right" in marked.stdout  # retroactive

    listed = await run("list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == (
        "2 control sets (1 made by the worker, 1 marked): 3 votes, 3 scored, 2 right"
    )
    assert lines[1].startswith(f"#{corrupted} (noise; image 1 worse; done): 1 votes, 1 scored")
    assert lines[2].startswith(f"#{generation} (marked by cli:")  # newest first
    as_json = json.loads((await run("list", "--json")).stdout)
    assert [(s["generation_id"], s["kind"], s["worse"], s["best"]) for s in as_json] == [
        (corrupted, "noise", 0, None),
        (generation, "marked", 2, None),
    ]

    unmarked = await run("unmark", str(generation))
    assert unmarked.returncode == 0, unmarked.stderr
    assert f"unmarked #{generation}; it was #{generation} (marked by" in unmarked.stdout
    refused = await run("unmark", str(corrupted))
    assert refused.returncode == 1 and "only an admin's mark can be removed" in refused.stderr
    assert "1 control sets (1 made by the worker" in (await run("list")).stdout

    async with platform.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT action, target, details, allowed FROM admin_actions ORDER BY id")
        )
        actions = [(r.action, r.target, r.allowed) for r in rows]
    assert actions == [
        ("control-mark", str(generation), True),
        ("control-unmark", str(generation), True),
    ]
