"""`prefloop arena start|stop|status` and `prefloop leaderboard` as an admin runs them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.support.arena_rows import add_set, add_users, add_version
from tests.support.cli import platform_env, prefloop


async def test_arena_commands_and_the_leaderboard(platform: Any, tmp_path: Path) -> None:
    env = platform_env(platform, platform.settings.data_dir)

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(prefloop, *args, env=env, cwd=tmp_path)

    adapter = await add_version(platform)
    hps = await add_version(platform, "hps", active=True)
    refused = await run("arena", "start", "base")
    assert refused.returncode == 1 and "base is the baseline" in refused.stderr
    started = await run("arena", "start", str(adapter), "--share", "0.2")
    assert started.returncode == 0, started.stderr
    assert f"opened comparison 1: adapter #{adapter} vs base" in started.stdout
    assert "share 20% of /imagine requests (this comparison)" in started.stdout
    again = await run("arena", "start", "base")
    assert again.returncode == 1 and "is already open" in again.stderr

    requester, other = await add_users(platform, 2)
    for k in range(6):
        picks = {requester: 1 if k < 4 else 0, other: 1}
        await add_set(
            platform,
            requester,
            [None, adapter],
            picks,
            comparison_id=1,
            prompt=f"prompt {k % 3}",
            scores={hps: [1.0, 2.0]},
        )
    status = await run("arena", "status", "--json")
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)
    assert found["open"] and found["share"] == 0.2 and not found["share_from_settings"]
    assert found["comparison"]["contender"] == str(adapter)
    assert found["comparison"]["baseline"] == "base"
    assert (found["mixed_sets"], found["judged_sets"], found["picks"]) == (6, 6, 12)
    assert found["judgement"]["n"] == 6 and found["judgement"]["wins"] == 4

    out = tmp_path / "board"
    board = await run("leaderboard", "--json", "--out", str(out), "--bootstrap", "50")
    assert board.returncode == 0, board.stderr
    data = json.loads(board.stdout)
    assert [r["version"] for r in data["ratings"]] == [str(adapter), "base"]
    assert data["ratings"][0]["comparisons"] == 12 and data["sets"] == 6
    assert data["head_to_head"][0]["comparisons"] == 12
    assert data["agreement"]["hps_version_id"] == hps and data["agreement"]["picks"] == 12
    assert data["agreement"]["agreement"] == 10 / 12  # the HPS prefers the adapter's image
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.json", "ratings.png", "report.md"]
    assert (out / "ratings.png").read_bytes().startswith(b"\x89PNG")
    assert f"| 1 | adapter #{adapter} |" in (out / "report.md").read_text()

    plain = await run("leaderboard", "--bootstrap", "20")
    assert plain.returncode == 0, plain.stderr
    assert "12 picks on 6 mixed sets" in plain.stdout
    written = [line.removeprefix("wrote ") for line in plain.stdout.splitlines() if "wrote" in line]
    reports = platform.settings.data_dir / "reports"
    assert len(written) == 3 and all(Path(p).parent.parent == reports for p in written)
    assert Path(written[0]).parent.name.startswith("leaderboard-")

    stopped = await run("arena", "stop")
    assert stopped.returncode == 0 and "stopped comparison 1" in stopped.stdout
    assert "no comparison is open" in (await run("arena", "stop")).stdout
    async with platform.engine.connect() as connection:
        actions = (
            await connection.execute(text("SELECT action, target FROM admin_actions ORDER BY id"))
        ).all()
    assert [tuple(a) for a in actions] == [
        ("arena-start", "1"),
        ("arena-stop", "1"),
        ("arena-stop", None),
    ]
