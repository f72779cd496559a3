"""``prefloop control``: mark a set with a known answer, unmark it, list control sets (audited)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.support import cli_settings, console, fail, member, with_platform
from bot.cli.support import run as run_command

if TYPE_CHECKING:
    from bot.controls.marking import ControlSet
    from bot.runtime import Platform

control_app = typer.Typer(
    help="Control sets: sets with a known worse or best image, which score raters.",
    no_args_is_help=True,
)

ImageNumber = Annotated[int | None, typer.Option(min=1, max=4, help="Image number, 1-4.")]


@control_app.command("mark")
def mark(
    generation: Annotated[int, typer.Argument(help="Generation id.")],
    worse: ImageNumber = None,
    best: ImageNumber = None,
) -> None:
    """Mark a finished set: image WORSE is known worse and/or image BEST known best.

    Votes already cast on the set are scored from now on; a new mark replaces an old one.
    """
    from bot.controls.marking import mark as mark_set

    if worse is None and best is None:
        fail("give --worse K, --best K or both", "yellow")

    async def go(platform: Platform) -> None:
        actor = member(None)
        marked = await mark_set(
            platform.sessions,
            generation,
            worse=None if worse is None else worse - 1,
            best=None if best is None else best - 1,
            actor=str(actor),
        )
        await platform.service.audit(
            actor, "control-mark", target=str(generation), worse=worse, best=best
        )
        console.print(f"marked {marked.describe()}", markup=False, highlight=False)

    run_command(with_platform(cli_settings(), go))


@control_app.command("unmark")
def unmark(generation: Annotated[int, typer.Argument(help="Generation id.")]) -> None:
    """Remove an admin's mark from a set; its votes are no longer scored."""
    from bot.controls.marking import unmark as unmark_set

    async def go(platform: Platform) -> None:
        actor = member(None)
        before = await unmark_set(platform.sessions, generation)
        await platform.service.audit(
            actor, "control-unmark", target=str(generation), was=before.describe()
        )
        console.print(f"unmarked #{generation}; it was {before.describe()}", markup=False)

    run_command(with_platform(cli_settings(), go))


@control_app.command("list")
def list_sets(
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
) -> None:
    """The control sets, newest first, with how the votes on each scored."""
    from bot.controls.marking import control_sets

    async def go(platform: Platform) -> None:
        found = await control_sets(platform.sessions, limit=limit)
        if as_json:
            console.print_json(json.dumps([s.to_json() for s in found]))
            return
        for line in lines(found):
            console.print(line, markup=False, highlight=False)

    run_command(with_platform(cli_settings(), go))


def lines(found: list[ControlSet]) -> list[str]:
    """A summary line, then one line per control set."""
    if not found:
        return ["no control sets yet"]
    marked = sum(1 for s in found if s.kind == "marked")
    votes = sum(s.votes for s in found)
    scored = sum(s.scored for s in found)
    right = sum(s.correct for s in found)
    head = (
        f"{len(found)} control sets ({len(found) - marked} made by the worker, {marked} "
        f"marked): {votes} votes, {scored} scored, {right} right"
    )
    return [head, *(s.describe() for s in found)]
