from __future__ import annotations

import asyncio

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from bot.db import migrate
from bot.db.engine import libpq_url, make_engine
from bot.db.models import Base
from bot.runtime import SchemaError, check_schema
from tests.support.database import fresh_database

OUR_TABLES = {
    "users",
    "generations",
    "images",
    "choices",
    "choice_history",
    "model_versions",
    "admin_actions",
    "dataset_exports",
    "retrain_runs",
    "comparisons",
    "hps_scores",
}


def _objects(url: str) -> tuple[set[str], set[str], set[str]]:
    with psycopg.connect(libpq_url(url)) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        types = {
            r[0]
            for r in conn.execute(
                "SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = 'public' AND typtype IN ('e', 'c') AND typrelid = 0 "
                "OR (n.nspname = 'public' AND typtype = 'e')"
            )
        }
        functions = {
            r[0]
            for r in conn.execute(
                "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'public'"
            )
        }
    return tables, types, functions


def test_upgrade_downgrade_upgrade_round_trip(server_url: str) -> None:
    with fresh_database(server_url) as url:
        migrate.upgrade(url)
        tables, types, functions = _objects(url)
        assert OUR_TABLES | {"procrastinate_jobs", "procrastinate_workers"} <= tables
        assert "procrastinate_defer_jobs_v1" in functions
        assert migrate.current(url).startswith(migrate.head())

        migrate.downgrade(url, "base")
        tables, types, functions = _objects(url)
        assert tables == {"alembic_version"}
        ours = {"frontend", "generation_status", "model_kind", "model_status"}
        assert not {t for t in types if t.startswith("procrastinate") or t in ours}
        assert not {f for f in functions if f.startswith("procrastinate")}
        assert migrate.current(url) == ""

        migrate.upgrade(url)
        assert _objects(url)[0] >= OUR_TABLES


def _ours(name: str | None, kind: str, parent: object) -> bool:
    return not (name or "").startswith("procrastinate")


def test_migrations_match_the_models(database_url: str) -> None:
    sync_url = libpq_url(database_url).replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(sync_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, kind, _: (
                        not (name or "").startswith("procrastinate")
                    ),
                },
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


async def test_a_database_behind_the_code_is_refused_with_advice(server_url: str) -> None:
    with fresh_database(server_url) as url:
        await asyncio.to_thread(migrate.upgrade, url, "0001")
        engine = make_engine(url)
        try:
            with pytest.raises(SchemaError, match="prefloop db upgrade"):
                await check_schema(engine)
        finally:
            await engine.dispose()
