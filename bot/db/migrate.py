"""Apply, revert and inspect schema migrations from code (`prefloop db …`, start-up, tests)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TextIO

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str, *, output: TextIO | None = None) -> Config:
    """An Alembic config for our migrations, bound to ``database_url``."""
    config = Config(str(ROOT / "alembic.ini"), stdout=output or io.StringIO())
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["quiet_logging"] = True
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (every revision by default)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "-1") -> None:
    """Step the schema back to ``revision`` (one step by default; ``base`` = empty)."""
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str:
    """The revision the database is at, as Alembic prints it (empty when none)."""
    output = io.StringIO()
    command.current(alembic_config(database_url, output=output))
    return output.getvalue().strip()


def head() -> str:
    """The newest revision in migrations/versions."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    return script.get_current_head() or ""
