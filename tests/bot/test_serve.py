"""`prefloop run` supervises its generation worker, a process of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bot.domain import UserRef
from tests.support.aio import eventually
from tests.support.cli import platform_env
from tests.support.database import generation_status
from tests.support.processes import alive, children, command_line

ALICE = UserRef.parse("cli:alice")


async def test_a_dead_worker_is_restarted_and_a_second_ctrl_c_stops_both(
    platform: Any, tmp_path: Path
) -> None:
    env = platform_env(platform, tmp_path / "data", worker__heartbeat_interval="0.5")
    log = tmp_path / "run.log"
    with log.open("w") as stderr:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", "--no-discord", env=env, stderr=stderr
        )
    try:
        first = await worker_of(server.pid)
        await made(platform, "a cat")
        os.kill(first, signal.SIGKILL)  # as the out-of-memory killer would
        second = await worker_of(server.pid, not_=first)
        await made(platform, "another cat")  # the new worker serves
        assert "the generation worker stopped unexpectedly (exit code -9)" in log.read_text()

        platform.settings.generator.steps = 200  # a long job, under way at the second Ctrl-C
        long = await platform.service.submit_prompt(ALICE, "a slow cat", 4)
        await eventually(lambda: _is(platform, long.generation_id, "running"), timeout=300)
        server.send_signal(signal.SIGINT)
        await eventually(lambda: _async("letting running jobs finish" in log.read_text()))
        server.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(server.wait(), 120)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert code == 130
    await eventually(lambda: _async(not alive(second)), timeout=120)  # it went with it


async def test_a_worker_that_cannot_start_stops_prefloop_run_with_its_reason(
    platform: Any, tmp_path: Path
) -> None:
    env = platform_env(platform, tmp_path / "data", generator__model=str(tmp_path / "nowhere"))
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        "--no-discord",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(server.communicate(), 600)
    log = stderr.decode()
    assert server.returncode == 1, log
    assert "is not a folder, a preset ('tiny') or a hub id" in log  # the worker's own reason
    assert "the generation worker stopped before it was ready" in log
    assert "starting it again" not in log  # a worker that never started is not restarted


async def worker_of(pid: int, not_: int | None = None) -> int:
    """The worker process `prefloop run` (``pid``) supervises (another than ``not_``)."""

    async def look() -> int | None:
        for child in await asyncio.to_thread(children, pid):
            if child != not_ and command_line(child)[-2:] == ["worker", "--supervised"]:
                return child
        return None

    return await eventually(look, timeout=120)


async def made(platform: Any, prompt: str) -> None:
    """Ask for images and wait until they are made."""
    submitted = await platform.service.submit_prompt(ALICE, prompt, 2)
    await eventually(lambda: _is(platform, submitted.generation_id, "done"), timeout=600)


async def _is(platform: Any, generation_id: int, status: str) -> bool:
    return await generation_status(platform, generation_id) == status


async def _async(value: Any) -> Any:
    return value
