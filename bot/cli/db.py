"""``prefloop db``: the schema migrations (Alembic)."""

from __future__ import annotations

from typing import Annotated

import typer

from bot.cli.support import cli_settings, console, plain_errors

db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: all)."""
    from bot.db import migrate

    with plain_errors():
        url = _database_url()
        migrate.upgrade(url, revision)
        console.print(f"database at {migrate.current(url) or 'base'}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()] = "-1") -> None:
    """Revert migrations down to REVISION (default: one step; 'base' = empty)."""
    from bot.db import migrate

    with plain_errors():
        url = _database_url()
        migrate.downgrade(url, revision)
        console.print(f"database at {migrate.current(url) or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one this code has."""
    from bot.db import migrate

    with plain_errors():
        console.print(f"database at {migrate.current(_database_url()) or 'base'}")
        console.print(f"code head   {migrate.head()}")


def _database_url() -> str:
    from bot.db.embedded import resolve_database_url

    return resolve_database_url(cli_settings())
