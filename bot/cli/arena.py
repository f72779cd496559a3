"""``prefloop arena`` (open, stop and follow a comparison; audited) and ``prefloop leaderboard``."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli.support import cli_settings, console, member, with_platform
from bot.cli.support import run as run_command

if TYPE_CHECKING:
    from bot.arena.store import ArenaStatus
    from bot.runtime import Platform

arena_app = typer.Typer(
    help="The arena: members judge a contender generator against the serving one.",
    no_args_is_help=True,
)


@arena_app.command("start")
def start(
    version: Annotated[
        str, typer.Argument(help="The contender: a generator adapter's id, or 'base'.")
    ],
    share: Annotated[
        float | None,
        typer.Option(help="Share of /imagine requests made as mixed sets; unset = arena.share."),
    ] = None,
) -> None:
    """Open a comparison of VERSION against the version serving now."""
    from bot.arena.versions import label, parse

    async def go(platform: Platform) -> None:
        contender = parse(version)
        actor = member(None)
        opened = await platform.service.arena.start(contender, actor=str(actor), share=share)
        await platform.service.audit(
            actor, "arena-start", target=str(opened.id), contender=label(contender), share=share
        )
        status = await platform.service.arena.status()
        console.print(f"opened {opened.title}", markup=False, highlight=False)
        _print(status, skip_head=True)

    run_command(with_platform(cli_settings(), go))


@arena_app.command("stop")
def stop() -> None:
    """Stop the open comparison (also one a retrain run's people's gate opened)."""

    async def go(platform: Platform) -> None:
        actor = member(None)
        stopped = await platform.service.arena.stop(str(actor))
        target = str(stopped.id) if stopped else None
        await platform.service.audit(actor, "arena-stop", target=target)
        if stopped is None:
            console.print("no comparison is open", markup=False)
            return
        console.print(f"stopped {stopped.title}", markup=False, highlight=False)
        _print(await platform.service.arena.status(stopped.id), skip_head=True)

    run_command(with_platform(cli_settings(), go))


@arena_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """The open comparison (or the last one): share, mixed sets, votes, the gate's test."""

    async def go(platform: Platform) -> None:
        found = await platform.service.arena.status()
        if as_json:
            console.print_json(json.dumps(status_json(found), default=str))
        else:
            _print(found)

    run_command(with_platform(cli_settings(), go))


def leaderboard(
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the report; default data_dir/reports/leaderboard-<UTC>."),
    ] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples.")] = 1000,
) -> None:
    """Rate every generator version from members' picks on mixed sets; write a report."""
    from bot.arena.leaderboard import leaderboard as make_board
    from bot.arena.leaderboard import report_folder, write_report

    settings = cli_settings()
    folder = out or report_folder(settings, datetime.now(UTC))

    async def go(platform: Platform) -> None:
        board = await make_board(platform.sessions, platform.settings, bootstrap=bootstrap)
        paths = write_report(board, folder)
        if as_json:
            console.print_json(
                json.dumps({**board.to_json(), "files": [str(p) for p in paths]}, default=str)
            )
            return
        console.print(board.describe(), markup=False, highlight=False)
        for path in paths:
            console.print(f"wrote {path}", markup=False, highlight=False)

    run_command(with_platform(settings, go))


def status_json(found: ArenaStatus) -> dict[str, Any]:
    from bot.arena.store import judgement_dict
    from bot.arena.versions import key

    c = found.comparison
    return {
        "comparison": None
        if c is None
        else {**asdict(c), "baseline": key(c.baseline), "contender": key(c.contender)},
        "open": found.open,
        "share": found.share,
        "share_from_settings": found.share_from_settings,
        "mixed_sets": found.mixed_sets,
        "judged_sets": found.judged_sets,
        "picks": found.picks,
        "judgement": judgement_dict(found.judgement) if found.judgement else None,
        "expires_at": found.expires_at,
    }


def _print(found: ArenaStatus, *, skip_head: bool = False) -> None:
    lines = found.lines()
    for line in lines[1:] if skip_head and found.comparison else lines:
        console.print(line, markup=False, highlight=False)
