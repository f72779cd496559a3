"""``prefloop export``: the votes as a dataset."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.support import cli_settings, console, fail, with_platform
from bot.cli.support import run as run_command

if TYPE_CHECKING:
    from bot.export.run import ExportResult
    from bot.runtime import Platform


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
    votes: Annotated[
        str | None,
        typer.Option(
            help="picks, or all (ties and 'none are good' too). "
            "Default: picks for hps (the release's content), all for parquet."
        ),
    ] = None,
    controls: Annotated[
        bool | None,
        typer.Option(
            "--controls/--no-controls",
            help="Include votes on control sets (flagged). Default: no for hps, yes for parquet.",
        ),
    ] = None,
) -> None:
    """Export the votes as a dataset: HPS v1 layout or Parquet, split by prompt."""
    from bot.export import ExportOptions, Rater, export_dataset, is_format
    from bot.export.selection import is_votes

    if not is_format(format):
        fail(f"unknown format {format!r}: use hps or parquet")
    if rater not in ("requester", "all"):
        fail(f"unknown rater {rater!r}: use requester or all")
    if votes is not None and not is_votes(votes):
        fail(f"unknown votes {votes!r}: use picks or all")
    options = ExportOptions(
        out=out,
        format=format,
        rater=Rater(rater),
        since=_utc_time(since) if since else None,
        incremental=incremental,
        test_fraction=test_fraction,
        seed=seed,
        votes=votes,
        controls=controls,
    )
    settings = cli_settings()

    async def go(platform: Platform) -> None:
        done = await export_dataset(platform.database_url, platform.storage, settings, options)
        console.print(render_export(done), markup=False, highlight=False)

    run_command(with_platform(settings, go))


def _utc_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r} is not a date or time (use e.g. 2026-11-01 or 2026-11-01T12:00)")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def render_export(done: ExportResult) -> str:
    """What an export wrote and what it left out, in a few lines."""
    counts = done.manifest["counts"]
    split = counts["instances"]
    votes = done.manifest["votes"]
    lines = [
        f"exported {done.instances} {done.noun} (train {split['train']}, test {split['test']}) "
        f"with {counts['images']} images to {done.out} in {done.seconds:.2f} s",
    ]
    written = votes["written"]
    if written["tie"] or written["none"] or done.manifest["controls"]["written"]:
        lines.append(
            f"votes: {written['pick']} picks, {written['tie']} ties, {written['none']} none; "
            f"{done.manifest['controls']['written']} on control sets"
        )
    left_out = [f"{v} {k.replace('_', ' ')}" for k, v in counts["excluded"].items() if v]
    left_out += [f"{v} {UNWANTED[k]}" for k, v in votes["left_out"].items() if v]
    if left_out:
        lines.append("left out: " + ", ".join(left_out))
    missing = done.manifest["missing_files"]
    if missing["count"]:
        lines.append(
            f"{missing['count']} image files are missing from the store, e.g. {missing['first'][0]}"
        )
    if counts["deferred_to_next_export"]:
        lines.append(
            f"{counts['deferred_to_next_export']} recent picks are left for the next export"
        )
    raters = done.manifest["raters"]
    if raters["raters"]:
        lines.append(
            f"rater weights: {raters['raters']} raters, mean {raters['mean_weight']:.2f}, "
            f"{100 * raters['below_half']:.0f}% below 0.5"
        )
    agreement = done.manifest["agreement"]
    if agreement["overall"]["units"]:
        from bot.raters.agreement import summary

        lines.append(f"agreement: {summary(agreement)}")
    lines.extend(f"warning: {w}" for w in done.warnings)
    return "\n".join(lines)


#: How ``render_export`` names the votes the selection left out.
UNWANTED = {"tie": "ties", "none": "none", "control": "control votes"}
