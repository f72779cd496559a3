"""The composition root: builds prefloop's resources once and hands them out.

Everything a front end or worker needs (settings, the database URL, engine and
sessions, the image store, the service) is made here at start-up, never at import.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db import migrate
from bot.db.embedded import resolve_database_url
from bot.db.engine import make_engine, make_sessionmaker
from bot.registry import ModelRegistry
from bot.service import CollectionService
from bot.storage import Storage, make_storage
from training.tokens import fit_prompt


class SchemaError(RuntimeError):
    """The database's schema is not the one this code expects."""


@dataclass
class Platform:
    settings: Settings
    database_url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    storage: Storage
    service: CollectionService
    registry: ModelRegistry  # trained models and which ones serve: the one every front end asks
    # Where maintenance jobs say what they did besides the log (the Discord admin channel).
    announce: Callable[[str], Awaitable[None]] | None = None
    # Where another front end sends the delivery notes of generations a member had deleted
    # (forgotten), so that their Discord posts come down: the bot, when it runs here.
    take_down: Callable[[list[dict[str, Any]]], Awaitable[int]] | None = None


@asynccontextmanager
async def open_platform(
    settings: Settings, *, upgrade: bool | None = None
) -> AsyncIterator[Platform]:
    """Start (or reach) the database, check or apply migrations, and build the resources.

    ``upgrade``: apply pending migrations. Default: yes for the embedded server, which
    is ours alone; with a shared server, only ``prefloop run``/``db upgrade`` migrate.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = await asyncio.to_thread(resolve_database_url, settings)
    if upgrade is None:
        upgrade = settings.database_url is None
    if upgrade:
        await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url, pool_size=settings.database_pool_size)
    try:
        if not upgrade:
            await check_schema(engine)
        await asyncio.to_thread(fit_prompt, "")  # build the tokenizer off the event loop
        sessions = make_sessionmaker(engine)
        storage = make_storage(settings)
        registry = ModelRegistry(sessions)
        service = CollectionService(sessions, settings, storage, registry)
        yield Platform(settings, url, engine, sessions, storage, service, registry)
    finally:
        await engine.dispose()


async def check_schema(engine: AsyncEngine) -> None:
    """Refuse to run against a database whose schema is older or newer than the code."""
    expected = migrate.head()
    async with engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT version_num FROM alembic_version")
            if await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
            else text("SELECT NULL")
        )
    if found != expected:
        raise SchemaError(
            f"the database schema is at revision {found or 'none'}, this prefloop needs "
            f"{expected}: run `prefloop db upgrade`"
        )


@contextmanager
def frozen_imports() -> Iterator[None]:
    """Import model libraries with the collector paused, then exempt what they made from it.

    Importing torch, diffusers and transformers creates ~470,000 objects; meanwhile the
    collector runs full collections over the growing heap again and again, each holding
    the GIL for up to half a second. Modules live as long as the process, so they are
    frozen out of the collector's walk as soon as they are in.
    """
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        gc.enable()


def settle_heap() -> None:
    """Exempt everything loaded so far (the pipeline) from garbage collection.

    A full collection walks every object not frozen; with torch and diffusers loaded and
    not frozen that took about half a second, holding the GIL, so every event loop in the
    process (heartbeats, Discord's 3-second deadline) stood still. Objects loaded at
    start-up live as long as the process, so once they are built the garbage among them
    is collected and the rest frozen. After :func:`frozen_imports` this walks only what
    was made since (milliseconds); call it from the thread that loaded the pipeline.
    """
    gc.collect()
    gc.freeze()
