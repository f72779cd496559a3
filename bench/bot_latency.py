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

And whether the bot's event loop stays responsive (goals: no stall over 100 ms; the
first interaction acknowledged in < 1 s): a task that asks to wake every 10 ms records
how late it woke, the loop's worst stall, during start-up with pipeline loading, during
an adapter hot reload (an adapter registered and promoted; the next job loads it) and
during generation (the rounds above); and an /imagine sent the moment the gateway is
ready, the worker starting at the same time as the bot, is timed from its creation to
its acknowledgement. Each layout runs in a fresh process, so that the in-process worker
imports its model libraries at start-up as it would in production.

    python -m bench.bot_latency [--requests 100] [--members 20] [--steps 3] [--layout both]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import LoopStalls, median, percentile, scratch_database

LAYOUTS = {"in-process": "worker in the bot's process", "own-process": "worker in its own process"}
STALL_GOAL_MS, FIRST_ACK_GOAL_MS = 100, 1000


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
    from tests.support.discord_bot import final_message

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


@dataclass
class LoopFigures:
    """Worst stalls of the bot's event loop (ms) and acknowledgement times (ms)."""

    startup_stall: float = 0.0
    startup_s: float = 0.0  # start -> worker ready (pipeline loaded)
    generation_stall: float = 0.0
    reload_stall: float = 0.0
    first_ack: float = 0.0
    first_status: int = 0
    reload_ack: float = 0.0


@asynccontextmanager
async def worker(platform: Any, *, separate: bool) -> AsyncIterator[asyncio.Event]:
    """The worker in the bot's process, or supervised in one of its own as `prefloop run`
    does; yields an event set once it takes jobs."""
    from bot.generation.worker import serve_worker
    from bot.serve import WorkerSupervisor
    from tests.support.aio import running
    from tests.support.cli import cli_env

    if not separate:
        ready = asyncio.Event()
        async with running(serve_worker(platform, on_ready=ready.set)):
            yield ready
        return
    settings = platform.settings
    env = cli_env(
        database_url=platform.database_url,
        data_dir=str(settings.data_dir),
        generator__model=settings.generator.model,
        generator__device="cpu",
    )
    supervisor = WorkerSupervisor(env)
    async with running(supervisor.run()):
        yield supervisor.ready


def ack_ms(handle: Any) -> tuple[float, int]:
    """(ms from an interaction's creation to the bot's first callback, that callback's status)."""
    attempt = handle.attempts[0]
    return (attempt.at - handle.created_at) * 1000, attempt.status


async def hot_reload(fake: Any, platform: Any, adapter: Path, member: int) -> tuple[float, float]:
    """Promote an adapter and ask for images: (ms to acknowledge, loop time of the promotion)."""
    from sqlalchemy import text

    from bot.registry import ModelRegistry
    from tests.support.discord_bot import final_message

    registry = ModelRegistry(platform.sessions)
    version = await registry.register("generator_adapter", str(adapter))
    promoted = asyncio.get_running_loop().time()
    await registry.promote(version)
    handle = await fake.slash_command("imagine", {"prompt": "a cat", "count": 4}, user_id=member)
    await handle.wait_for_callback(timeout=120)
    final = await fake.wait_for(lambda: final_message(handle), timeout=300)
    generation = int(final.custom_ids()[0].split(":")[2])
    async with platform.engine.connect() as conn:
        used = await conn.scalar(
            text("SELECT adapter_version_id FROM generations WHERE id = :g"), {"g": generation}
        )
    if used != version:
        raise RuntimeError(f"the worker did not load the promoted adapter (it used {used})")
    return ack_ms(handle)[0], promoted


async def measure(
    args: argparse.Namespace, *, separate: bool, model: Path, adapter: Path
) -> tuple[dict[str, list[dict[str, float]]], LoopFigures]:
    from bot.config import load_settings
    from bot.discord.client import run_bot, sync_commands
    from bot.runtime import open_platform
    from tests.support.aio import running
    from tests.support.discord_bot import final_message
    from tests.support.fake_discord import FakeDiscord

    members = [920_000_000_000_000_000 + k for k in range(args.members)]
    figures = LoopFigures()
    stalls = LoopStalls()
    loop = asyncio.get_running_loop()
    with scratch_database() as (_, url), tempfile.TemporaryDirectory() as data:
        async with FakeDiscord() as fake:
            for member in members:
                fake.add_member(member, f"m{member % 1000}")
            settings = load_settings(
                _env_file=None,
                database_url=url,
                data_dir=data,
                generator={"model": str(model), "steps": args.steps, "device": "cpu"},
                limits={"max_queued_per_user": args.requests + 2},
                discord={
                    "token": fake.token,
                    "api_base_url": fake.api_base,
                    "gateway_url": fake.gateway_url,
                },
            )
            async with open_platform(settings, upgrade=False) as platform, running(stalls.run()):
                await sync_commands(settings, None)
                started = loop.time()
                async with (
                    worker(platform, separate=separate) as ready,
                    running(run_bot(platform)),
                ):
                    await fake.wait_until_ready(timeout=120)
                    options = {"prompt": "a first cat", "count": 4}
                    first = await fake.slash_command("imagine", options, user_id=members[0])
                    await first.wait_for_callback(timeout=120)
                    figures.first_ack, figures.first_status = ack_ms(first)
                    await asyncio.wait_for(ready.wait(), 900)
                    figures.startup_s = loop.time() - started
                    figures.startup_stall = stalls.worst(started, loop.time()) * 1000
                    await fake.wait_for(lambda: final_message(first), timeout=300)
                    generating = loop.time()
                    sequential: list[dict[str, float]] = []
                    for _ in range(args.requests):
                        sequential += await one_round(fake, platform, members[:1])
                    concurrent: list[dict[str, float]] = []
                    for _ in range(max(1, args.requests // args.members)):
                        concurrent += await one_round(fake, platform, members)
                    figures.generation_stall = stalls.worst(generating, loop.time()) * 1000
                    figures.reload_ack, promoted = await hot_reload(
                        fake, platform, adapter, members[0]
                    )
                    figures.reload_stall = stalls.worst(promoted, loop.time()) * 1000
    records = {
        f"{args.requests} sequential": sequential,
        f"{len(concurrent)} with {args.members} members at once": concurrent,
    }
    return records, figures


def report(layout: str, records: dict[str, list[dict[str, float]]], loop: LoopFigures) -> None:
    for label, rows in records.items():
        print(f"/imagine, {layout}, {label}:")
        for part, goal in (
            ("bot", "  (goal p50 <= 150, p95 <= 300)"),
            ("outside_pipeline", ""),
        ):
            ms = [r[part] * 1000 for r in rows]
            name = "bot's own overhead" if part == "bot" else "all time outside the pipeline"
            print(f"  {name}: p50 {median(ms):.0f} ms, p95 {percentile(ms, 95):.0f} ms{goal}")
    worst = max(loop.startup_stall, loop.reload_stall, loop.generation_stall)
    met = worst <= STALL_GOAL_MS and loop.first_ack < FIRST_ACK_GOAL_MS and loop.first_status < 300
    print(
        f"event loop, {layout} (goals: no stall over {STALL_GOAL_MS} ms, first interaction "
        f"acknowledged in < {FIRST_ACK_GOAL_MS} ms: {'met' if met else 'MISSED'}):"
    )
    print(
        f"  worst stall: start-up with pipeline loading {loop.startup_stall:.0f} ms "
        f"(worker ready after {loop.startup_s:.1f} s), adapter hot reload "
        f"{loop.reload_stall:.0f} ms, generation {loop.generation_stall:.0f} ms"
    )
    print(
        f"  /imagine sent the moment the gateway was ready: acknowledged in "
        f"{loop.first_ack:.0f} ms (HTTP {loop.first_status}); during the hot reload: "
        f"{loop.reload_ack:.0f} ms"
    )


def prepare(folder: Path) -> tuple[Path, Path]:
    """The tiny preset and a random LoRA adapter for it (made in a subprocess, so that
    this process has not imported the model libraries when a layout starts)."""
    from training.presets import save_preset

    model = save_preset("tiny", folder / "tiny")
    adapter = folder / "lora"
    code = "import sys; from bench.common import random_lora; random_lora(sys.argv[1], sys.argv[2])"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code, str(model), str(adapter)], check=True, cwd=root)
    return model, adapter


def main(args: argparse.Namespace) -> None:
    if args.layout != "both":
        separate = args.layout == "own-process"
        records, loop = asyncio.run(
            measure(args, separate=separate, model=args.model, adapter=args.adapter)
        )
        report(LAYOUTS[args.layout], records, loop)
        return
    with tempfile.TemporaryDirectory() as folder:
        model, adapter = prepare(Path(folder))
        for layout in LAYOUTS:  # each in a fresh process: nothing imported before it starts
            command = [sys.executable, "-m", "bench.bot_latency", *sys.argv[1:], "--layout", layout]
            command += ["--model", str(model), "--adapter", str(adapter)]
            subprocess.run(command, check=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--layout", choices=["both", *LAYOUTS], default="both")
    parser.add_argument("--model", type=Path, help="a diffusers folder (default: the tiny preset)")
    parser.add_argument("--adapter", type=Path, help="a LoRA adapter folder for --model")
    arguments = parser.parse_args()
    if arguments.layout != "both" and not (arguments.model and arguments.adapter):
        parser.error("--layout in-process|own-process needs --model and --adapter")
    main(arguments)
