"""How fast picks are recorded: `record_choice` against PostgreSQL, with pgbench as the ceiling.

20,000 picks by 2,000 members over 5,000 finished generations (4 images each):
throughput with 64 concurrent tasks (goal >= 1,000 picks/s on a 2-core machine) and
latency with 16 (goal p99 <= 50 ms). Then the same figures for first clicks: each pick by
a member seen for the first time (no member row yet, so the pick also creates it).
pgbench's TPC-B-like TPS on the same server and connection count is printed beside them
as the server's ceiling.

    python -m bench.choices [--picks 20000] [--pool 16]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import subprocess
import time
from pathlib import Path

from sqlalchemy import text

from bench.common import median, percentile, scratch_database
from bot.config import load_settings
from bot.db.engine import libpq_url, make_engine, make_sessionmaker
from bot.domain import UserRef
from bot.service import CollectionService
from bot.storage import LocalStorage

GENERATIONS, MEMBERS = 5_000, 2_000


async def seed_rows(engine) -> None:
    """Finished generations with 4 images each, straight into the tables."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO users (frontend, external_id) "
                "SELECT 'discord', g::text FROM generate_series(1, :m) g"
            ),
            {"m": MEMBERS},
        )
        await conn.execute(
            text(
                "INSERT INTO generations (prompt, n_images, params, status, requested_by) "
                "SELECT 'prompt ' || g, 4, '{}'::jsonb, 'done', 1 + g % :m "
                "FROM generate_series(1, :n) g"
            ),
            {"n": GENERATIONS, "m": MEMBERS},
        )
        await conn.execute(
            text(
                "INSERT INTO images "
                "(generation_id, index, storage_key, sha256, seed, width, height) "
                "SELECT g.id, k, 'k', repeat('0', 64), k, 512, 512 "
                "FROM generations g, generate_series(0, 3) k"
            )
        )


def known_members(count: int, rng: random.Random) -> list[UserRef]:
    """``count`` clickers drawn from the seeded members."""
    return [UserRef.parse(f"discord:{rng.randint(1, MEMBERS)}") for _ in range(count)]


def new_members(count: int, first: int) -> list[UserRef]:
    """``count`` clickers never seen before (ids from ``first`` on, past the seeded ones)."""
    return [UserRef.parse(f"discord:{first + k}") for k in range(count)]


async def picks(
    service: CollectionService, members: list[UserRef], concurrency: int, rng: random.Random
):
    """One pick per clicker in ``members`` from ``concurrency`` tasks.

    Returns (seconds, per-pick latencies)."""
    plan = [(rng.randint(1, GENERATIONS), user, rng.randint(0, 3)) for user in members]
    latencies: list[float] = []
    queue = iter(plan)

    async def member() -> None:
        for generation, user, index in queue:
            start = time.perf_counter()
            await service.record_choice(generation, user, index)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(member() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


def pgbench(server_url: str, database_url: str, clients: int, seconds: int) -> float:
    """pgbench's TPC-B-like TPS on the same server (its own tables, dropped after)."""
    url = libpq_url(database_url)
    subprocess.run(["pgbench", "-i", "-q", "-s", "4", url], check=True, capture_output=True)
    try:
        out = subprocess.run(
            ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        subprocess.run(["pgbench", "-i", "-I", "d", url], capture_output=True)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


async def main(args: argparse.Namespace) -> None:
    with scratch_database() as (server, url):
        engine = make_engine(url, pool_size=args.pool)
        try:
            await seed_rows(engine)
            settings = load_settings(_env_file=None, database_url=url)
            service = CollectionService(
                make_sessionmaker(engine), settings, LocalStorage(Path("/tmp"))
            )
            rng = random.Random(0)
            await picks(service, known_members(500, rng), 16, rng)  # warm the pool and caches
            seconds, _ = await picks(service, known_members(args.picks, rng), 64, rng)
            _, latencies = await picks(service, known_members(args.picks // 4, rng), 16, rng)
            first = MEMBERS + 1
            new_seconds, _ = await picks(service, new_members(args.picks, first), 64, rng)
            first += args.picks
            _, new_latencies = await picks(service, new_members(args.picks // 4, first), 16, rng)
            async with engine.connect() as conn:
                recorded = await conn.scalar(text("SELECT count(*) FROM choice_history"))
        finally:
            await engine.dispose()
        ceiling = pgbench(server, url, clients=args.pool, seconds=10)
    ms = [v * 1000 for v in latencies]
    print(
        f"record_choice, {args.picks} picks, 64 tasks, pool {args.pool}: "
        f"{args.picks / seconds:,.0f} picks/s  (goal >= 1,000)"
    )
    print(
        f"record_choice latency, 16 tasks: p50 {median(ms):.1f} ms, "
        f"p99 {percentile(ms, 99):.1f} ms  (goal p99 <= 50 ms)"
    )
    new_ms = [v * 1000 for v in new_latencies]
    print(
        f"first clicks (member row created), {args.picks} picks, 64 tasks: "
        f"{args.picks / new_seconds:,.0f} picks/s; 16 tasks: p50 {median(new_ms):.1f} ms, "
        f"p99 {percentile(new_ms, 99):.1f} ms"
    )
    print(f"pgbench TPC-B-like, {args.pool} clients, same server: {ceiling:,.0f} tps (ceiling)")
    print(f"history rows written: {recorded} (re-picks and first picks; double clicks write none)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=20_000)
    parser.add_argument("--pool", type=int, default=16, help="database connections")
    asyncio.run(main(parser.parse_args()))
