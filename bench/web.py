"""The web page under 50 concurrent members: page, image and vote latency (p50/p95), beside
the same work through the service call the CLI makes.

A scratch database with 1,000 finished sets of 4 images (real PNG files in a local store)
and 500 members. `prefloop web` serves it in a process of its own (as in production: the
load generator must not share its event loop); 50 members, each signed in with a login
link (its page, then its button) and keeping one connection, loop over: open a set's
page, fetch one of its images, vote. Then 50 tasks do the same work in-process through
``CollectionService`` (``get_generation``, the store's ``get``, ``record_choice``): what
`prefloop show` and `prefloop pick` call. The difference is what the web layer costs
(HTTP, sessions, templates, the image file).

    python -m bench.web [--members 50] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import sys
import tempfile
import time

import httpx
from PIL import Image as PILImage
from sqlalchemy import text

from bench.common import median, percentile, scratch_database
from bot.config import load_settings
from bot.domain import UserRef
from bot.runtime import open_platform
from bot.web.security import make_login_token

SETS, MEMBERS, DISTINCT_IMAGES = 1_000, 500, 64
_LOGS: set[asyncio.Task[None]] = set()  # the server's log, passed on while it runs


def png(seed: int) -> bytes:
    """A 256x256 picture of noise-free colour blocks (a few KB, like a small thumbnail)."""
    rng = random.Random(seed)
    image = PILImage.new("RGB", (256, 256))
    for x in range(0, 256, 32):
        for y in range(0, 256, 32):
            colour = tuple(rng.randrange(256) for _ in range(3))
            image.paste(colour, (x, y, x + 32, y + 32))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def seed(platform) -> None:
    """Members, finished sets and their images, straight into the tables and the store."""
    keys = [await platform.storage.put(png(k), "png") for k in range(DISTINCT_IMAGES)]
    async with platform.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO users (frontend, external_id) "
                "SELECT 'cli', 'member' || g FROM generate_series(1, :m) g"
            ),
            {"m": MEMBERS},
        )
        await conn.execute(
            text(
                "INSERT INTO generations (prompt, n_images, params, status, requested_by, "
                "finished_at) SELECT 'a prompt number ' || g, 4, '{}'::jsonb, 'done', "
                "1 + g % :m, now() FROM generate_series(1, :n) g"
            ),
            {"n": SETS, "m": MEMBERS},
        )
        await conn.execute(
            text(
                "INSERT INTO images (generation_id, index, storage_key, sha256, seed, "
                "width, height) SELECT g.id, k, f.key, f.sha, k, 256, 256 "
                "FROM generations g CROSS JOIN generate_series(0, 3) k "
                "JOIN unnest(CAST(:keys AS text[]), CAST(:shas AS text[])) "
                "WITH ORDINALITY AS f(key, sha, n) ON f.n = 1 + (g.id * 4 + k) % :d"
            ),
            {"keys": [k for k, _ in keys], "shas": [s for _, s in keys], "d": len(keys)},
        )


async def web_server(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    """`prefloop web` on a free port; its process and URL (its log is passed on)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "web",
        "--port",
        "0",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    async for raw in process.stderr:
        said = raw.decode("utf-8", "replace")
        found = re.search(r"prefloop web page: (http://\S+)", said)
        if found:
            _LOGS.add(asyncio.create_task(_pass_on(process.stderr)))
            return process, found.group(1)
        sys.stderr.write(said)
    raise RuntimeError("prefloop web stopped before it listened (its log is above)")


async def _pass_on(stream: asyncio.StreamReader) -> None:
    async for raw in stream:
        sys.stderr.write(raw.decode("utf-8", "replace"))


async def over_http(base: str, settings, members: int, rounds: int, rng: random.Random):
    """Each member: page, image, vote, ``rounds`` times. Latencies in ms by kind."""
    times: dict[str, list[float]] = {"page": [], "image": [], "vote": []}

    async def member(k: int) -> None:
        who = UserRef.parse(f"cli:member{1 + k}")
        token, _ = make_login_token(settings, who, admin=False)
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            asked = await client.get(f"/login/link?token={token}")  # "Sign in as …?"
            assert asked.status_code == 200, asked.text
            confirm = re.search(r'name="csrf" value="([^"]+)"', asked.text).group(1)
            signed = await client.post("/login/link", data={"csrf": confirm, "token": token})
            assert signed.status_code == 303, signed.text
            csrf = None
            for _ in range(rounds):
                set_id = rng.randint(1, SETS)
                start = time.perf_counter()
                page = await client.get(f"/sets/{set_id}")
                times["page"].append(time.perf_counter() - start)
                assert page.status_code == 200, page.text[:300]
                csrf = csrf or re.search(r'data-csrf="([^"]+)"', page.text).group(1)
                src = re.findall(r'<img[^>]+src="(/images/[^"]+)"', page.text)
                start = time.perf_counter()
                image = await client.get(rng.choice(src))
                times["image"].append(time.perf_counter() - start)
                assert image.status_code == 200
                start = time.perf_counter()
                vote = await client.post(
                    f"/sets/{set_id}/vote",
                    data={"vote": str(rng.randint(1, 4))},
                    headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
                )
                times["vote"].append(time.perf_counter() - start)
                assert vote.status_code == 200, vote.text[:300]

    await asyncio.gather(*(member(k) for k in range(members)))
    return {kind: [v * 1000 for v in values] for kind, values in times.items()}


async def through_service(platform, members: int, rounds: int, rng: random.Random):
    """The same work as the CLI's `prefloop show` and `prefloop pick` call it."""
    times: dict[str, list[float]] = {"page": [], "image": [], "vote": []}
    service = platform.service

    async def member(k: int) -> None:
        who = UserRef.parse(f"cli:member{1 + k}")
        for _ in range(rounds):
            set_id = rng.randint(1, SETS)
            start = time.perf_counter()
            view = await service.get_generation(set_id)
            times["page"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await platform.storage.get(rng.choice(view.images).storage_key)
            times["image"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await service.record_choice(set_id, who, rng.randint(0, 3))
            times["vote"].append(time.perf_counter() - start)

    await asyncio.gather(*(member(k) for k in range(members)))
    return {kind: [v * 1000 for v in values] for kind, values in times.items()}


def line(label: str, ms: dict[str, list[float]]) -> str:
    return f"{label:<34}" + "  ".join(
        f"{kind} p50 {median(v):6.1f} p95 {percentile(v, 95):6.1f} ms" for kind, v in ms.items()
    )


async def main(args: argparse.Namespace) -> None:
    with scratch_database() as (_server, url), tempfile.TemporaryDirectory() as data:
        settings = load_settings(_env_file=None, database_url=url, data_dir=data, web={"port": 0})
        async with open_platform(settings, upgrade=True) as platform:
            await seed(platform)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("PREFLOOP_")},
                "PREFLOOP_DATABASE_URL": url,
                "PREFLOOP_DATA_DIR": data,
                "PREFLOOP_LOG_LEVEL": "WARNING",
                # 50 members sign in from one address: more than a person's limit.
                "PREFLOOP_WEB__LOGIN_ATTEMPTS_PER_MINUTE": "10000",
            }
            process, base = await web_server(env)
            rng = random.Random(0)
            results = []
            try:
                await over_http(base, settings, args.members, 2, rng)  # warm up
                for members, rounds in ((1, args.rounds * 3), (args.members, args.rounds)):
                    start = time.perf_counter()
                    web = await over_http(base, settings, members, rounds, rng)
                    results.append([members, rounds, web, time.perf_counter() - start])
            finally:
                process.terminate()
                await process.wait()
            await through_service(platform, args.members, 2, rng)  # warm up
            for result in results:
                start = time.perf_counter()
                result.append(await through_service(platform, result[0], result[1], rng))
                result.append(time.perf_counter() - start)
    for members, rounds, web, web_seconds, direct, direct_seconds in results:
        done = members * rounds
        alone = "one member alone" if members == 1 else f"{members} concurrent members"
        print(f"{alone}, {rounds} rounds each ({done} of each kind)")
        print(line("  web (HTTP, prefloop web):", web))
        print(line("  service call (the CLI's):", direct))
        ratio = median(web["page"]) / median(direct["page"])
        print(
            f"  rounds per second: web {done / web_seconds:,.0f}, "
            f"service {done / direct_seconds:,.0f}  (page p50, web/service: {ratio:.1f}x)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
