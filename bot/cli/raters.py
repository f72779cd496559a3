"""``prefloop raters``: each member's reliability as a rater, for admins (never members)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from bot.cli.support import cli_settings, console, fail, member, with_platform
from bot.cli.support import run as run_command

if TYPE_CHECKING:
    from bot.raters.store import RaterView, Sort
    from bot.runtime import Platform


def raters(
    user: Annotated[
        str | None,
        typer.Argument(help="One member (discord:1234 or a local name); default: everyone."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most N members.")] = 50,
    sort: Annotated[
        str,
        typer.Option(help="weight: lowest weight (likeliest random clickers) first; votes: most."),
    ] = "weight",
) -> None:
    """Raters' weights: control-set accuracy, agreement with others (admins only)."""
    if sort not in ("weight", "votes"):
        fail(f"unknown sort {sort!r}: use weight or votes")
    order: Sort = "votes" if sort == "votes" else "weight"
    settings = cli_settings()

    async def go(platform: Platform) -> None:
        service = platform.service.raters
        if user is not None:
            found = [await service.rater(member(user))]
        else:
            found = await service.raters(sort=order, limit=limit)
        if json_output:
            console.print_json(json.dumps(_as_json(found, platform)))
        elif user is not None:
            console.print("\n".join(found[0].lines()), markup=False, highlight=False)
        else:
            _print_table(found, platform)

    run_command(with_platform(settings, go))


def _as_json(found: list[RaterView], platform: Platform) -> dict[str, object]:
    careful = found[0].careful_agreement if found else None
    return {
        "prior_careful": platform.settings.raters.prior_careful,
        "careful_agreement": careful,
        "raters": [view.as_dict() for view in found],
    }


def _print_table(found: list[RaterView], platform: Platform) -> None:
    if not found:
        console.print("No member has voted yet.")
        return
    table = Table("member", "votes", "controls right", "accuracy [95%]", "chance", "shared")
    table.add_column("agreement")
    table.add_column("weight")
    for view in found:
        r = view.reliability
        table.add_row(
            Text(view.member + (" (banned)" if view.banned else "")),
            str(view.votes),
            f"{r.correct}/{r.controls}",
            f"{r.accuracy.mean:.2f} [{r.accuracy.low:.2f}, {r.accuracy.high:.2f}]"
            if r.accuracy
            else "-",
            f"{r.chance:.2f}" if r.chance is not None else "-",
            str(r.shared),
            f"{100 * r.agreement:.0f}%" if r.agreement is not None else "-",
            f"{view.weight:.2f}",
        )
    console.print(table)
    careful = found[0].careful_agreement
    console.print(
        "weight: the chance a rater votes carefully rather than clicks at random "
        f"(a newcomer: {platform.settings.raters.prior_careful:.2f})"
        + (f"; careful raters agree {100 * careful:.0f}% of the time" if careful else ""),
        markup=False,
        highlight=False,
    )
