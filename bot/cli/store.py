"""``prefloop store``: the image store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.support import cli_settings, console, with_platform
from bot.cli.support import run as run_command

if TYPE_CHECKING:
    from bot.runtime import Platform

store_app = typer.Typer(help="The image store.", no_args_is_help=True)


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

    async def go(platform: Platform) -> None:
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
