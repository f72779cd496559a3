"""What the benchmarks share: a scratch database on the server they measure."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from bot.db import migrate
from tests.support import fresh_database


def server_url() -> str:
    """PREFLOOP_BENCH_DATABASE_URL, else the test server, else the embedded one."""
    for name in ("PREFLOOP_BENCH_DATABASE_URL", "PREFLOOP_TEST_DATABASE_URL"):
        if os.environ.get(name):
            return os.environ[name]
    import tempfile
    from pathlib import Path

    from bot.db.embedded import pgserver_module

    folder = Path(tempfile.mkdtemp(prefix="prefloop-bench-")) / "pg"
    return pgserver_module().get_server(folder, cleanup_mode="delete").get_uri("postgres")


@contextmanager
def scratch_database() -> Iterator[tuple[str, str]]:
    """(server URL, URL of a fresh migrated database) for one benchmark run."""
    server = server_url()
    with fresh_database(server) as url:
        migrate.upgrade(url)
        yield server, url


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
