"""The bot answers within Discord's 3 seconds from its first second: while the worker
starts and loads its pipeline, and while it hot-reloads an adapter.

The fake Discord refuses a callback after 3 s (404 Unknown interaction), so an accepted
callback (200) is the proof; nothing else here is timed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot.registry import ModelRegistry
from tests.support.adapters import lora_adapter
from tests.support.aio import eventually
from tests.support.cli import cli_env
from tests.support.discord_bot import ALICE, BOB, final_message, imagine
from tests.support.processes import alive, children, command_line
from tests.support.startup_probe import adapter_used

ROOT = Path(__file__).resolve().parents[3]


async def test_imagine_as_the_in_process_worker_starts_and_reloads_is_acknowledged(
    platform: Any, tiny_model: Path, tmp_path: Path
) -> None:
    adapter = lora_adapter(tiny_model, tmp_path / "lora")
    args = [platform.database_url, str(tiny_model), str(tmp_path / "data"), str(adapter)]
    probe = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.support.startup_probe", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    outcome = json.loads(probe.stdout.splitlines()[-1])
    assert outcome["startup"] == {"status": 200, "images": 2}
    assert outcome["reload"] == [{"status": 200, "images": 2}] * 2
    assert outcome["adapter"]  # the job did load the adapter meanwhile


async def test_prefloop_run_answers_while_its_worker_loads_and_reloads(
    bot_platform: Any, fake: Any, tiny_model: Path, tmp_path: Path
) -> None:
    """`prefloop run` as members meet it: the worker is a process of its own."""
    adapter = lora_adapter(tiny_model, tmp_path / "lora")  # made before the fake is busy
    env = cli_env(
        database_url=bot_platform.database_url,
        data_dir=str(tmp_path / "data"),
        generator__model=str(tiny_model),
        generator__steps="3",
        discord__token=fake.token,
        discord__api_base_url=fake.api_base,
        discord__gateway_url=fake.gateway_url,
    )
    with (tmp_path / "run.log").open("w") as log:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", env=env, cwd=tmp_path, stderr=log
        )
    workers: list[int] = []
    try:
        await fake.wait_until_ready(timeout=300)
        first = await imagine(fake, ALICE, "a red cat", count=2)  # the worker is starting
        assert first.callback_status == 200
        assert len((await fake.wait_for(lambda: final_message(first), 600)).attachments) == 2
        workers = await eventually(lambda: asyncio.to_thread(children, server.pid))
        assert [command_line(pid)[-2:] for pid in workers] == [["worker", "--supervised"]]

        registry = ModelRegistry(bot_platform.sessions)
        version = await registry.register("generator_adapter", str(adapter))
        await registry.promote(version)
        during = [await imagine(fake, member, "a blue cat", count=2) for member in (ALICE, BOB)]
        assert [it.callback_status for it in during] == [200, 200]
        for it in during:
            assert len((await fake.wait_for(lambda it=it: final_message(it), 600)).attachments) == 2
        assert await adapter_used(bot_platform, during[0]) == version  # reloaded meanwhile
    finally:
        server.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(server.wait(), 120)
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert not [pid for pid in workers if alive(pid)]  # the worker stopped with it
