"""The Discord bot's own overhead per /imagine, against the fake Discord with the tiny preset.

Two figures per request: the bot's own overhead (interaction received -> generation
queued, plus generation finished -> final message with images and buttons posted; goal
p50 <= 150 ms, p95 <= 300 ms), and all the time outside the pipeline (interaction ->
final message, minus the time the pipeline was busy in that window: its own call and,
with concurrent members, the calls it queued behind; what remains includes the worker's
per-job work for everyone ahead in the queue). Measured over 100 sequential requests
and over 5 rounds of 20 concurrent members.

Two layouts: the worker inside the bot's process (`prefloop run`, one event loop for
both), and the worker in a process of its own (`prefloop worker`, as on a GPU machine);
each job records when its pipeline call ran (``generations.timings``). The fake Discord
runs in the bot's process and PostgreSQL beside them, all on this machine's cores, so
the figures include the fake server's own work.

    python bench/bot_latency.py [--requests 100] [--members 20] [--steps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, percentile, scratch_database


async def job_records(platform: Any) -> dict[int, tuple[float, float, dict[str, float]]]:
    """Per generation: when it was queued and finished (epoch seconds), and its timings."""
    from sqlalchemy import text

    query = (
        "SELECT id, extract(epoch FROM requested_at), extract(epoch FROM finished_at), timings "
        "FROM generations WHERE timings IS NOT NULL"
    )
    async with platform.engine.connect() as conn:
        rows = await conn.execute(text(query))
        return {int(g): (float(q), float(f), t) for g, q, f, t in rows}


async def one_round(fake: Any, platform: Any, members: list[int]) -> list[dict[str, float]]:
    """Members issue /imagine at once; where the time of each request went, in seconds.

    - ``bot``: the bot's own part: interaction received -> generation queued, plus
      generation finished -> final message posted;
    - ``outside_pipeline``: interaction -> final message, minus the time the pipeline
      was busy in that window (any job's: concurrent members queue behind each other).
    """
    from tests.discord.conftest import final_message

    to_epoch = time.time() - asyncio.get_running_loop().time()

    async def request(member: int) -> tuple[float, float, int]:
        options = {"prompt": f"a cat {member}", "count": 4}
        handle = await fake.slash_command("imagine", options, user_id=member)
        final = await fake.wait_for(lambda: final_message(handle), timeout=120)
        generation = int(final.custom_ids()[0].split(":")[2])
        return handle.created_at + to_epoch, time.time(), generation

    windows = await asyncio.gather(*(request(m) for m in members))
    jobs = await job_records(platform)
    busy = [
        (t["pipeline_start"], t["pipeline_start"] + t["pipeline_s"]) for _, _, t in jobs.values()
    ]
    records = []
    for start, end, generation in windows:
        queued, finished, _ = jobs[generation]
        pipeline = sum(max(0.0, min(end, b) - max(start, a)) for a, b in busy)
        records.append(
            {"bot": (queued - start) + (end - finished), "outside_pipeline": end - start - pipeline}
        )
    return records


@asynccontextmanager
async def worker(platform: Any, *, separate: bool) -> AsyncIterator[None]:
    """The worker in the bot's process, or in one of its own."""
    from bot.jobs.worker import serve_worker
    from tests.support import cli_env, running

    if not separate:
        async with running(serve_worker(platform)):
            yield
        return
    settings = platform.settings
    env = cli_env(
        database_url=platform.database_url,
        data_dir=str(settings.data_dir),
        generator__model=settings.generator.model,
        generator__device="cpu",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "worker", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 60)


async def measure(args: argparse.Namespace, *, separate: bool) -> dict[str, list[dict[str, float]]]:
    from bot.config import load_settings
    from bot.discord.client import run_bot, sync_commands
    from bot.runtime import open_platform
    from tests.fake_discord import FakeDiscord
    from tests.support import running
    from training.presets import save_preset

    members = [920_000_000_000_000_000 + k for k in range(args.members)]
    with scratch_database() as (_, url), tempfile.TemporaryDirectory() as data:
        model = save_preset("tiny", Path(data) / "models" / "tiny")
        async with FakeDiscord() as fake:
            for member in members:
                fake.add_member(member, f"m{member % 1000}")
            settings = load_settings(
                _env_file=None,
                database_url=url,
                data_dir=data,
                generator={"model": str(model), "steps": args.steps, "device": "cpu"},
                limits={"max_queued_per_user": args.requests + 1},
                discord={
                    "token": fake.token,
                    "api_base_url": fake.api_base,
                    "gateway_url": fake.gateway_url,
                },
            )
            async with open_platform(settings, upgrade=False) as platform:
                await sync_commands(settings, None)
                async with worker(platform, separate=separate), running(run_bot(platform)):
                    await fake.wait_until_ready(timeout=30)
                    await one_round(fake, platform, members[:1])  # warm-up (and worker start)
                    sequential: list[dict[str, float]] = []
                    for _ in range(args.requests):
                        sequential += await one_round(fake, platform, members[:1])
                    concurrent: list[dict[str, float]] = []
                    for _ in range(max(1, args.requests // args.members)):
                        concurrent += await one_round(fake, platform, members)
    return {
        f"{args.requests} sequential": sequential,
        f"{len(concurrent)} with {args.members} members at once": concurrent,
    }


async def main(args: argparse.Namespace) -> None:
    for separate in (False, True):
        layout = "worker in its own process" if separate else "worker in the bot's process"
        for label, records in (await measure(args, separate=separate)).items():
            print(f"/imagine, {layout}, {label}:")
            for part, goal in (
                ("bot", "  (goal p50 <= 150, p95 <= 300)"),
                ("outside_pipeline", ""),
            ):
                ms = [r[part] * 1000 for r in records]
                name = "bot's own overhead" if part == "bot" else "all time outside the pipeline"
                print(f"  {name}: p50 {median(ms):.0f} ms, p95 {percentile(ms, 95):.0f} ms{goal}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
