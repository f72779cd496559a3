"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.db.engine import libpq_url


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server, yield its URL, drop it afterwards."""
    name = f"prefloop_test_{uuid.uuid4().hex[:12]}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (host, port, user and query kept)."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def count(platform: Any, table: str) -> int:
    async with platform.engine.connect() as connection:
        return int(await connection.scalar(text(f"SELECT count(*) FROM {table}")))


async def make_done_generation(
    platform: Any,
    generator: Any,
    user: str = "cli:alice",
    prompt: str = "a red cat",
    n: int = 4,
    delivery: dict[str, Any] | None = None,
) -> int:
    """Submit through the service and run the job body directly (no worker): a done generation."""
    from bot.domain import UserRef
    from bot.generation.runner import GenerationRunner

    submitted = await platform.service.submit_prompt(
        UserRef.parse(user), prompt, n, delivery=delivery
    )
    runner = GenerationRunner(platform.sessions, platform.storage, generator)
    assert await runner.run(submitted.generation_id) == "done"
    return submitted.generation_id


async def eventually(check: Any, timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll the async ``check`` until it returns something truthy; fail after ``timeout``."""
    import asyncio

    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(every)
    return result


async def generation_status(platform: Any, generation_id: int) -> str:
    async with platform.engine.connect() as connection:
        return await connection.scalar(
            text("SELECT status FROM generations WHERE id = :id"), {"id": generation_id}
        )


def cli_env(**settings: str) -> dict[str, str]:
    """The environment for a `prefloop` subprocess: no inherited PREFLOOP_ settings.

    The preset cache is kept: building the tiny generator takes a minute.
    """
    import os

    keep = {"PREFLOOP_PRESET_CACHE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLOOP_") or k in keep}
    env.update({f"PREFLOOP_{k.upper()}": v for k, v in settings.items()})
    env["COLUMNS"] = "200"  # keep rich from wrapping what tests read
    return env


def platform_env(platform: Any, data_dir: Any, **settings: str) -> dict[str, str]:
    """:func:`cli_env` for a `prefloop` process beside ``platform``: its database and
    generator, a data folder of its own; ``settings`` add or override."""
    base = {
        "database_url": platform.database_url,
        "data_dir": str(data_dir),
        "generator__model": platform.settings.generator.model,
    }
    return cli_env(**{**base, **settings})


def prefloop(*args: str, env: dict[str, str], cwd: Any = None, timeout: float = 180) -> Any:
    """Run the `prefloop` CLI in a subprocess, as a user would."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@asynccontextmanager
async def running(coroutine: Any) -> AsyncIterator[Any]:
    """Run ``coroutine`` as a task for the block; cancel it (and wait) afterwards."""
    import asyncio
    import contextlib

    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
