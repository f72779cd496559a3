"""`prefloop raters` and the agreement in `prefloop stats --json`, as an admin runs them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import platform_env, prefloop
from tests.support.raters import add_member, careful_and_clicker


async def test_raters_and_agreement_from_the_command_line(platform: Any, tmp_path: Path) -> None:
    env = platform_env(platform, platform.settings.data_dir)

    async def run(*args: str) -> Any:
        done = await asyncio.to_thread(prefloop, *args, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done

    alice = await add_member(platform, "cli:alice")
    bob = await add_member(platform, "cli:bob")
    mallory = await add_member(platform, "discord:666")
    await careful_and_clicker(platform, [alice, bob], mallory, controls=6, shared=4)

    stats = json.loads((await run("stats", "--json", "--user", "alice")).stdout)
    overall = stats["agreement"]["overall"]
    # Four sets voted [k, k, k + 1]: a third of the ordered pairs agree on each.
    assert (overall["units"], overall["labels"]) == (4, 12)
    assert overall["pairwise"] == pytest.approx(1 / 3)
    assert overall["picks"]["pairwise"] == pytest.approx(1 / 3)
    assert [week["week"] for week in stats["agreement"]["weeks"]] == ["2025-12-29"]
    assert stats["picks"] == 30  # the other numbers are still there
    table = (await run("stats", "--user", "alice")).stdout
    assert "agreement" in table and "pairwise 33.3%" in table

    listed = json.loads((await run("raters", "--json")).stdout)
    weights = {r["member"]: r["weight"] for r in listed["raters"]}
    assert list(weights) == ["discord:666", "cli:alice", "cli:bob"]  # lowest weight first
    assert weights["discord:666"] < 0.01 and weights["cli:alice"] > 0.95
    assert listed["prior_careful"] == 0.8
    mallory_row = listed["raters"][0]
    assert (mallory_row["controls"], mallory_row["correct"], mallory_row["votes"]) == (6, 0, 10)

    shown = (await run("raters", "--sort", "votes", "--limit", "1")).stdout
    assert "cli:alice" in shown and "discord:666" not in shown

    one = (await run("raters", "discord:666")).stdout
    assert "discord:666: weight 0.00" in one and "0 of 6 right" in one

    unknown = await asyncio.to_thread(prefloop, "raters", "cli:nobody", env=env, cwd=tmp_path)
    assert unknown.returncode == 1 and "cli:nobody has never used prefloop" in unknown.stderr
    bad = await asyncio.to_thread(prefloop, "raters", "--sort", "x", env=env, cwd=tmp_path)
    assert bad.returncode == 1 and "unknown sort 'x'" in bad.stderr
