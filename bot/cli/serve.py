"""``prefloop run`` and ``prefloop worker`` (serving), and ``prefloop discord sync``."""

from __future__ import annotations

from typing import Annotated

import typer

from bot.cli.support import cli_settings, console, err
from bot.cli.support import run as run_command

discord_app = typer.Typer(help="The Discord bot.", no_args_is_help=True)


def run(
    no_discord: Annotated[
        bool, typer.Option("--no-discord", help="Serve without the Discord bot.")
    ] = False,
    no_web: Annotated[bool, typer.Option("--no-web", help="Serve without the web page.")] = False,
) -> None:
    """Run the platform until Ctrl-C: database, migrations, worker, Discord bot, web page."""
    from bot.serve import serve

    settings = cli_settings()
    if not no_discord and settings.discord.token is None:
        from bot.domain import MissingToken

        err.print(str(MissingToken()), style="red", markup=False, highlight=False)
        raise typer.Exit(2)
    web = settings.web.enabled and not no_web
    run_command(serve(settings, worker=True, listener=True, discord=not no_discord, web=web))


def worker(
    supervised: Annotated[
        bool, typer.Option("--supervised", hidden=True, help="Run as `prefloop run`'s child.")
    ] = False,
) -> None:
    """Run one generation worker alone (one per GPU, on any machine reaching the database)."""
    from bot.serve import serve

    run_command(serve(cli_settings(), worker=True, listener=False, supervised=supervised))


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
