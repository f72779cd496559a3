"""Test fixtures: a real PostgreSQL, the real migrations, the tiny preset from a saved folder.

``PREFLOOP_TEST_DATABASE_URL`` names a server to use (CI sets the machine's); without
it the embedded server starts in a temp folder. Every test session gets a database of
its own, migrated with ``alembic upgrade head``, and each test starts from empty tables.
The trained tiny generator preset is built once into ``.cache/presets`` in the checkout
(``PREFLOOP_PRESET_CACHE`` overrides) before the first test, outside every test's timeout
(``make test`` builds it in a step of its own, with a progress bar), and reused by every
later run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.config import Settings
from bot.runtime import Platform, open_platform
from tests.support.database import fresh_database
from tests.support.folders import temp_folder_outside_pytest
from tests.support.settings import make_settings

os.environ.setdefault(
    "PREFLOOP_PRESET_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "presets")
)
# One thread per torch process (this one and every subprocess a test starts). The tests'
# models are tiny, so a second thread gains little on an idle machine; on a busy one
# OpenMP's threads spin-wait for each other at every operation and a step takes several
# times as long (measured: 50 VAE steps, 362 s with two threads, 61 s with one, while
# other work held both cores). Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the tiny generator preset now, if the cache lacks it: no test's timeout
    should include a build."""
    from training.presets import build_cached

    build_cached()


TABLES = (
    "users, generations, images, choices, choice_history, model_versions, admin_actions, "
    "dataset_exports, retrain_runs, comparisons, hps_scores, "
    "procrastinate_jobs, procrastinate_events, procrastinate_workers, "
    "procrastinate_periodic_defers"
)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL to a PostgreSQL server's maintenance database: the configured one, or an
    embedded server for this session (stopped and removed at its end)."""
    configured = os.environ.get("PREFLOOP_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from bot.db.embedded import pgserver_module

    with temp_folder_outside_pytest("prefloop-test-pg-") as folder:
        server = pgserver_module().get_server(folder / "data")
        try:
            yield server.get_uri("postgres")
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A database for this test session, migrated to head."""
    from bot.db import migrate

    with fresh_database(server_url) as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset, saved once to a folder and loaded from there like any model."""
    from training.presets import save_preset

    return save_preset("tiny", tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def generator(tiny_model: Path) -> Any:
    from training.generator import Generator

    return Generator.load(str(tiny_model), cache_dir=tiny_model.parent, device="cpu")


@pytest.fixture
def settings(tmp_path: Path, database_url: str, tiny_model: Path) -> Settings:
    return make_settings(tmp_path / "data", database_url, tiny_model)


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    """The platform on empty tables."""
    async with open_platform(settings, upgrade=False) as platform:
        async with platform.engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        yield platform
