"""Engines and sessions, built once at start-up from one standard PostgreSQL URL.

Two drivers read the same database: SQLAlchemy on asyncpg for our tables, and psycopg for
the job queue (procrastinate). Each gets the URL in its own form.
"""

from __future__ import annotations

import re

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://")


def libpq_url(url: str) -> str:
    """``postgresql://…``: the form libpq, psycopg and asyncpg.connect take."""
    return _SCHEME.sub("postgresql://", url)


def sqlalchemy_url(url: str) -> str:
    """``postgresql+asyncpg://…``: the form SQLAlchemy's async engine takes."""
    return _SCHEME.sub("postgresql+asyncpg://", url)


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine on asyncpg; ``pool_pre_ping`` survives a restarted server."""
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
