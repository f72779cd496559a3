"""The members' use cases: imagine, pick, show, stats; and forget, ban, unban.

They go through the same ``CollectionService`` as the Discord bot.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from bot.cli.support import cli_settings, console, err, member, plain_errors, with_platform
from bot.cli.support import run as run_command

if TYPE_CHECKING:
    from bot.domain import GenerationView, Vote
    from bot.runtime import Platform

UserOption = Annotated[
    str | None,
    typer.Option("--user", "-u", help="Member id (discord:1234) or a local name; default: you."),
]


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

    async def go(platform: Platform) -> None:
        submitted = await platform.service.submit_prompt(member(user), prompt, count, options)
        console.print(
            f"generation {submitted.generation_id} queued "
            f"(position {submitted.queue_position}, seeds {submitted.seeds})"
        )
        if not wait:
            return
        await _wait_and_show(platform, submitted.generation_id, wait_seconds=timeout)

    run_command(with_platform(settings, go))


async def _wait_and_show(platform: Platform, generation_id: int, *, wait_seconds: float) -> None:
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


def pick(
    generation: Annotated[int, typer.Argument(help="Generation id.")],
    vote: Annotated[
        str,
        typer.Argument(
            help="Image number as printed (1-4), `tie` (no favourite: no image is better "
            "than the others) or `none` (none are good).",
            metavar="K|tie|none",
        ),
    ],
    user: UserOption = None,
) -> None:
    """Vote on a generation: your favourite image, `tie` or `none` (again to change it)."""
    from bot.domain import Vote

    with plain_errors():  # a bad vote is refused before anything starts
        choice = Vote.parse(vote)
    settings = cli_settings()

    async def go(platform: Platform) -> None:
        result = await platform.service.record_choice(generation, member(user), choice)
        console.print(voted(generation, result.vote, result.previous, result.changed))

    run_command(with_platform(settings, go))


def voted(generation: int, vote: Vote, previous: Vote | None, changed: bool) -> str:
    """What `prefloop pick` says it recorded."""

    def name(v: Vote) -> str:
        if v.index is not None:
            return f"image {v.index + 1}"
        return "no favourite" if v.kind == "tie" else "none are good"

    if not changed:
        if vote.index is not None:
            return f"image {vote.index + 1} was already your pick for generation {generation}"
        return f"you already said {name(vote)} for generation {generation}"
    if previous is None:
        if vote.index is not None:
            return f"you picked image {vote.index + 1} of generation {generation}"
        meaning = (
            "no image is better than the others" if vote.kind == "tie" else "none of them are good"
        )
        return f"you said {name(vote)} for generation {generation}: {meaning}"
    if previous.index is not None and vote.index is not None:
        return (
            f"you changed your pick for generation {generation} "
            f"from image {previous.index + 1} to image {vote.index + 1}"
        )
    return (
        f"you changed your vote for generation {generation} from {name(previous)} to {name(vote)}"
    )


def show(generation: Annotated[int, typer.Argument(help="Generation id.")]) -> None:
    """Print a generation: its status, parameters and image files."""
    settings = cli_settings()

    async def go(platform: Platform) -> None:
        print_generation(platform, await platform.service.get_generation(generation))

    run_command(with_platform(settings, go))


def stats(user: UserOption = None, json_output: bool = typer.Option(False, "--json")) -> None:
    """The dataset's size, the active models and your own numbers."""
    from dataclasses import asdict

    from bot.raters.agreement import summary

    settings = cli_settings()

    async def go(platform: Platform) -> None:
        numbers = await platform.service.stats(member(user))
        agreement = await platform.service.raters.dataset_agreement()  # the whole dataset's
        if json_output:
            console.print_json(json.dumps({**asdict(numbers), "agreement": agreement}))
            return
        table = Table(show_header=False, box=None)
        for name, value in asdict(numbers).items():
            table.add_row(name.replace("_", " "), str(value))
        table.add_row("agreement", summary(agreement))
        console.print(table)

    run_command(with_platform(settings, go))


def forget(
    user: Annotated[str, typer.Argument(help="Member id (discord:1234) or local name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a member's picks and prompts (a data-deletion request)."""
    if not yes:
        typer.confirm(f"Delete every pick and prompt of {user}?", abort=True)
    settings = cli_settings()

    async def go(platform: Platform) -> None:
        done = await platform.service.forget_user(member(user))
        console.print(
            f"forgot {user}: {done.generations} generations, {done.picks} picks, "
            f"{len(done.files)} image files deleted"
        )

    run_command(with_platform(settings, go))


def ban(
    user: Annotated[str, typer.Argument(help="Member id (discord:1234) or local name.")],
    reason: Annotated[str | None, typer.Option(help="Shown to the member.")] = None,
) -> None:
    """Stop a member from submitting prompts and picking."""
    settings = cli_settings()

    async def go(platform: Platform) -> None:
        await platform.service.ban_user(member(user), reason)
        console.print(f"{user} is banned")

    run_command(with_platform(settings, go))


def unban(user: Annotated[str, typer.Argument(help="Member id or local name.")]) -> None:
    """Lift a ban."""
    settings = cli_settings()

    async def go(platform: Platform) -> None:
        lifted = await platform.service.unban_user(member(user))
        console.print(f"{user} is no longer banned" if lifted else f"{user} was not banned")

    run_command(with_platform(settings, go))


def print_generation(platform: Platform, view: GenerationView) -> None:
    lines = [f"generation {view.id} ({view.status}): {view.prompt}"]
    if view.error:
        lines.append(f"  {view.error}")
    for image in view.images:
        where = platform.storage.local_path(image.storage_key) or image.storage_key
        lines.append(f"  image {image.index + 1}: {where}  (seed {image.seed})")
    if view.withheld:
        lines.append(f"  {view.withheld} image(s) withheld by the safety filter")
    console.print("\n".join(lines), markup=False, highlight=False)
