"""Alembic's async environment.

Migrations run on the psycopg driver (the queue's), which accepts multi-statement SQL
such as procrastinate's schema; the application itself runs on asyncpg.
"""

from __future__ import annotations

import asyncio
import logging.config
from concurrent.futures import ThreadPoolExecutor

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bot.db.engine import libpq_url
from bot.db.models import Base

config = context.config
if config.config_file_name and not config.attributes.get("quiet_logging"):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return url
    # Plain `alembic …` from a shell: resolve the URL the way prefloop does.
    from bot.config import load_settings
    from bot.db.embedded import resolve_database_url

    return resolve_database_url(load_settings())


def _psycopg_async_url(url: str) -> str:
    return libpq_url(url).replace("postgresql://", "postgresql+psycopg://", 1)


MIGRATION_LOCK = 0x70726566  # pg advisory lock key: one migrating process at a time


def _run(connection: Connection) -> None:
    # Two processes starting at once (say `prefloop run` and a worker) must not both
    # apply the same revision: the second waits here, then finds nothing left to do.
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
    connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            compare_type=True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
        connection.commit()


async def _run_async() -> None:
    engine = create_async_engine(_psycopg_async_url(_database_url()), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def _run_outside_any_loop() -> None:
    """asyncio.run here, or in a thread when the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_run_async())
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _run_async()).result()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
_run_outside_any_loop()
