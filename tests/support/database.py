"""Test databases: a fresh one per session or bench run, and what tests read from them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


async def sql(platform: Any, statement: str, **params: Any) -> Any:
    """Run one SQL statement in a transaction of its own; its result."""
    async with platform.engine.begin() as connection:
        return await connection.execute(text(statement), params)


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


async def generation_status(platform: Any, generation_id: int) -> str:
    async with platform.engine.connect() as connection:
        return await connection.scalar(
            text("SELECT status FROM generations WHERE id = :id"), {"id": generation_id}
        )
