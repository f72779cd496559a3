"""The ``prefloop`` command: parse, call the platform's use cases, print.

The CLI is a front end like Discord: ``imagine`` and ``pick`` go through the same
``CollectionService`` the bot uses. Heavy libraries load only in commands that run models.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bot.cli.models import models_app
from bot.cli.retrain import jobs, retrain
from bot.cli.support import (
    cli_settings,
    console,
    err,
    fail,
    member,
    plain_errors,
    print_generation,
    render_export,
    with_platform,
)
from bot.cli.support import run as run_command
from bot.cli.train import eval_app, score, train_app

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
store_app = typer.Typer(help="The image store.", no_args_is_help=True)
app.add_typer(store_app, name="store")


UserOption = Annotated[
    str | None,
    typer.Option("--user", "-u", help="Member id (discord:1234) or a local name; default: you."),
]


def main() -> None:
    """Console-script entry point."""
    app()


# ----- serving ----------------------------------------------------------------------


@app.command()
def run(
    no_discord: Annotated[
        bool, typer.Option("--no-discord", help="Serve without the Discord bot.")
    ] = False,
) -> None:
    """Run the platform until Ctrl-C: database, migrations, worker, the Discord bot."""
    from bot.serve import serve

    settings = cli_settings()
    if not no_discord and settings.discord.token is None:
        from bot.domain import MissingToken

        err.print(str(MissingToken()), style="red", markup=False, highlight=False)
        raise typer.Exit(2)
    run_command(serve(settings, worker=True, listener=True, discord=not no_discord))


@app.command()
def worker(
    supervised: Annotated[
        bool, typer.Option("--supervised", hidden=True, help="Run as `prefloop run`'s child.")
    ] = False,
) -> None:
    """Run one generation worker alone (one per GPU, on any machine reaching the database)."""
    from bot.serve import serve

    run_command(serve(cli_settings(), worker=True, listener=False, supervised=supervised))


# ----- the database -----------------------------------------------------------------


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


@discord_app.command("sync")
def discord_sync(
    guild: Annotated[
        int | None, typer.Option(help="Register in this guild only (instant, for testing).")
    ] = None,
) -> None:
    """Register the slash commands with Discord (Discord limits how often: not on every start)."""
    from bot.discord.client import sync_commands

    names = run_command(sync_commands(cli_settings(), guild))
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
    from bot.domain import GenerationOptions

    settings = cli_settings()
    options = GenerationOptions(negative_prompt=negative, seed=seed)

    async def go(platform: Any) -> None:
        submitted = await platform.service.submit_prompt(member(user), prompt, count, options)
        console.print(
            f"generation {submitted.generation_id} queued "
            f"(position {submitted.queue_position}, seeds {submitted.seeds})"
        )
        if not wait:
            return
        await _wait_and_show(platform, submitted.generation_id, wait_seconds=timeout)

    run_command(with_platform(settings, go))


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
    print_generation(platform, view)
    if view.status != "done":
        raise typer.Exit(1)


@app.command()
def pick(
    generation: Annotated[int, typer.Argument(help="Generation id.")],
    image: Annotated[int, typer.Argument(help="Image number as printed, 1-4.")],
    user: UserOption = None,
) -> None:
    """Record your favourite image of a generation (again to change it)."""
    settings = cli_settings()

    async def go(platform: Any) -> None:
        result = await platform.service.record_choice(generation, member(user), image - 1)
        if not result.changed:
            console.print(f"image {image} was already your pick for generation {generation}")
        elif result.previous is None:
            console.print(f"you picked image {image} of generation {generation}")
        else:
            console.print(
                f"you changed your pick for generation {generation} "
                f"from image {result.previous + 1} to image {image}"
            )

    run_command(with_platform(settings, go))


@app.command()
def show(generation: Annotated[int, typer.Argument(help="Generation id.")]) -> None:
    """Print a generation: its status, parameters and image files."""
    settings = cli_settings()

    async def go(platform: Any) -> None:
        print_generation(platform, await platform.service.get_generation(generation))

    run_command(with_platform(settings, go))


@app.command()
def stats(user: UserOption = None, json_output: bool = typer.Option(False, "--json")) -> None:
    """The dataset's size, the active models and your own numbers."""
    from dataclasses import asdict

    settings = cli_settings()

    async def go(platform: Any) -> None:
        numbers = await platform.service.stats(member(user))
        if json_output:
            console.print_json(json.dumps(asdict(numbers)))
            return
        table = Table(show_header=False, box=None)
        for name, value in asdict(numbers).items():
            table.add_row(name.replace("_", " "), str(value))
        console.print(table)

    run_command(with_platform(settings, go))


@app.command()
def forget(
    user: Annotated[str, typer.Argument(help="Member id (discord:1234) or local name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a member's picks and prompts (a data-deletion request)."""
    if not yes:
        typer.confirm(f"Delete every pick and prompt of {user}?", abort=True)
    settings = cli_settings()

    async def go(platform: Any) -> None:
        done = await platform.service.forget_user(member(user))
        console.print(
            f"forgot {user}: {done.generations} generations, {done.picks} picks, "
            f"{len(done.files)} image files deleted"
        )

    run_command(with_platform(settings, go))


@app.command()
def ban(
    user: Annotated[str, typer.Argument(help="Member id (discord:1234) or local name.")],
    reason: Annotated[str | None, typer.Option(help="Shown to the member.")] = None,
) -> None:
    """Stop a member from submitting prompts and picking."""
    settings = cli_settings()

    async def go(platform: Any) -> None:
        await platform.service.ban_user(member(user), reason)
        console.print(f"{user} is banned")

    run_command(with_platform(settings, go))


@app.command()
def unban(user: Annotated[str, typer.Argument(help="Member id or local name.")]) -> None:
    """Lift a ban."""
    settings = cli_settings()

    async def go(platform: Any) -> None:
        lifted = await platform.service.unban_user(member(user))
        console.print(f"{user} is no longer banned" if lifted else f"{user} was not banned")

    run_command(with_platform(settings, go))


@store_app.command("sweep")
def store_sweep(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            min=1.0, help="Leave files written in the last N minutes (default: the setting)."
        ),
    ] = None,
) -> None:
    """Delete image files that no row references (also run on a schedule by `prefloop run`)."""
    settings = cli_settings()

    async def go(platform: Any) -> None:
        swept = await platform.service.sweep_store(grace_minutes=grace, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        count = swept.unreferenced if dry_run else swept.deleted
        console.print(
            f"{swept.files} files in the store; {verb} {count} that no row references",
            markup=False,
            highlight=False,
        )
        if swept.examples:
            console.print("  e.g. " + ", ".join(swept.examples), markup=False, highlight=False)

    run_command(with_platform(settings, go))


# ----- the dataset ------------------------------------------------------------------


@app.command()
def export(
    out: Annotated[
        Path, typer.Argument(help="Folder to write (new, empty, or an earlier export).")
    ],
    format: Annotated[
        str, typer.Option("--format", "-f", help="hps (the HPS v1 release layout) or parquet.")
    ] = "hps",
    rater: Annotated[
        str,
        typer.Option(help="requester: the pick of the member who asked; all: every member's."),
    ] = "requester",
    since: Annotated[
        str | None, typer.Option(help="Only picks made from this time on (ISO 8601, UTC).")
    ] = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Only picks new since the last such export.")
    ] = False,
    test_fraction: Annotated[
        float | None, typer.Option(help="Share of prompts in the test split (default: settings).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed (default: settings).")] = None,
) -> None:
    """Export the picks as a dataset: HPS v1 layout or Parquet, split by prompt."""
    from bot.export import ExportOptions, Rater, export_dataset

    if format not in ("hps", "parquet"):
        fail(f"unknown format {format!r}: use hps or parquet")
    if rater not in ("requester", "all"):
        fail(f"unknown rater {rater!r}: use requester or all")
    options = ExportOptions(
        out=out,
        format=format,  # type: ignore[arg-type]
        rater=Rater(rater),
        since=_utc_time(since) if since else None,
        incremental=incremental,
        test_fraction=test_fraction,
        seed=seed,
    )
    settings = cli_settings()

    async def go(platform: Any) -> None:
        done = await export_dataset(platform.database_url, platform.storage, settings, options)
        console.print(render_export(done), markup=False, highlight=False)

    run_command(with_platform(settings, go))


def _utc_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r} is not a date or time (use e.g. 2026-11-01 or 2026-11-01T12:00)")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ----- models (bot/cli/train.py) ---------------------------------------------------

app.command()(score)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(models_app, name="models")
app.command()(retrain)
app.command()(jobs)


@app.command()
def config() -> None:
    """Print the effective settings (secrets masked: tokens, keys, passwords in URLs)."""
    from bot.config import printable

    console.print_json(data=printable(cli_settings()))
