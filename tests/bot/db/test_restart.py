"""A database that drops every connection under a running platform (a restart, a failover).

The engine's pool pings a connection before lending it, procrastinate's pool checks
its connections, the notification listeners reconnect, and a job worker that lost the
database starts again: the next submit, job and pick succeed without a restart of
prefloop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.db.engine import libpq_url
from bot.domain import UserRef
from bot.generation.worker import serve_worker
from bot.notify import GenerationEvent, NotificationListener
from tests.support.aio import eventually, running
from tests.support.database import generation_status

ALICE = UserRef.parse("discord:2001")
BOB = UserRef.parse("discord:2002")


async def _drop_every_connection(database_url: str) -> int:
    """What a server restart does to clients: every backend of the database ends.

    Done over a connection of its own, so that no pooled connection is spared.
    """
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True
    ) as conn:
        cursor = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_pick_submit_and_job_succeed_after_the_database_dropped_every_connection(
    platform: Any,
) -> None:
    finished: list[GenerationEvent] = []
    connects: list[float] = []
    reconnected = asyncio.Event()

    async def on_generation(event: GenerationEvent) -> None:
        finished.append(event)

    async def on_connect() -> None:
        connects.append(asyncio.get_running_loop().time())
        if len(connects) > 1:
            reconnected.set()

    listener = NotificationListener(
        platform.database_url, on_generation=on_generation, on_connect=on_connect
    )
    async with running(listener.run()), running(serve_worker(platform)) as worker:
        await asyncio.wait_for(listener.connected.wait(), 60)
        before = await platform.service.submit_prompt(ALICE, "a cat before", 2)
        await eventually(lambda: _done(platform, before.generation_id), timeout=120)
        await platform.service.record_choice(before.generation_id, ALICE, 0)

        # the engine's pool, procrastinate's pool and listener, our listener
        assert await _drop_every_connection(platform.database_url) >= 4

        pick = await platform.service.record_choice(before.generation_id, BOB, 1)
        assert pick.changed and pick.pickers == 2
        # A notification sent while a listener is away is not kept for it (front ends
        # catch up in on_connect); this one has none, so the next job waits for it.
        await asyncio.wait_for(reconnected.wait(), 60)
        after = await platform.service.submit_prompt(ALICE, "a cat after", 2)
        await eventually(lambda: _done(platform, after.generation_id), timeout=120)
        assert not worker.done()  # the worker kept running: it did the job
        pick = await platform.service.record_choice(after.generation_id, BOB, 1)
        assert pick.changed
        await eventually(lambda: _seen(finished, after.generation_id), timeout=60)


@asynccontextmanager
async def _database_away(server_url: str, database_url: str) -> AsyncIterator[None]:
    """For the block, the database refuses connections and has dropped every one (a restart)."""
    name = make_url(database_url).database
    async with await psycopg.AsyncConnection.connect(
        libpq_url(server_url), autocommit=True
    ) as admin:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_a_worker_that_lost_the_database_for_a_while_starts_again(
    platform: Any, server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.jobs.app")
    async with running(serve_worker(platform)) as worker:
        await eventually(lambda: _workers(platform), timeout=120)
        async with _database_away(server_url, platform.database_url):
            # away until the worker has noticed (its heartbeat failed), however long that takes
            await eventually(lambda: _restarting(caplog), timeout=120)
        submitted = await platform.service.submit_prompt(ALICE, "a cat after a restart", 2)
        await eventually(lambda: _done(platform, submitted.generation_id), timeout=180)
        assert not worker.done()
    assert (await platform.service.record_choice(submitted.generation_id, BOB, 0)).changed


async def _workers(platform: Any) -> int:
    async with platform.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM procrastinate_workers")))


async def _restarting(caplog: pytest.LogCaptureFixture) -> bool:
    return any("starting it again" in record.getMessage() for record in caplog.records)


async def _done(platform: Any, generation_id: int) -> bool:
    return await generation_status(platform, generation_id) == "done"


async def _seen(finished: list[GenerationEvent], generation_id: int) -> bool:
    return any(event.generation_id == generation_id for event in finished)
