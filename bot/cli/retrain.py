"""``prefloop retrain`` (queue the retrain loop, optionally follow it) and ``prefloop jobs``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from bot.cli.support import cli_settings, console, err, with_platform
from bot.cli.support import run as run_command

if TYPE_CHECKING:
    from bot.retrain.follow import RunState
    from bot.runtime import Platform


def retrain(
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the run's stages until it ends.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 24 * 3600,
) -> None:
    """Queue a retrain: export, refit HPS, re-adapt the generator, promote what wins."""
    from bot.retrain.follow import follow_run
    from bot.retrain.triggers import request_retrain

    settings = cli_settings()

    async def go(platform: Platform) -> None:
        request = await request_retrain(platform.sessions, trigger="cli", requested_by="cli")
        if request.created:
            console.print(f"retrain {request.run_id} queued (job {request.job_id})")
        else:
            console.print(
                f"retrain {request.run_id} is already {request.status} "
                f"(since {request.since:%Y-%m-%d %H:%M:%S} UTC, asked by {request.trigger})"
            )
        if not wait:
            return
        if not await platform.service.workers_alive(platform.settings.worker.stalled_after * 2):
            err.print("[yellow]no worker is running: start `prefloop run` to run it[/]")
        try:
            async with asyncio.timeout(timeout):
                ended = await follow_run(platform.sessions, request.run_id, on_change=_show)
        except TimeoutError:
            err.print(f"[yellow]gave up waiting; `prefloop jobs` shows retrain {request.run_id}[/]")
            raise typer.Exit(1) from None
        for summary in ended.summaries:
            console.print(summary, markup=False, highlight=False)
        if ended.note:  # judged by people: days, not a wait
            console.print(ended.note, markup=False, highlight=False)
            return
        if ended.error:
            console.print(f"failed: {ended.error}", markup=False, highlight=False)
        if ended.status != "succeeded":
            raise typer.Exit(1)

    run_command(with_platform(settings, go))


def _show(state: RunState) -> None:
    stage = f", {state.stage}" if state.stage else ""
    progress = f": {state.progress}" if state.progress else ""
    line = f"retrain {state.run_id}: {state.status}{stage}{progress}"
    err.print(line, markup=False, highlight=False)


def jobs(
    last: Annotated[int, typer.Option(help="How many past retrain runs to list.")] = 5,
) -> None:
    """Queued and running jobs, and the retrain runs: stage, progress, outcome."""
    from bot.jobs.status import unfinished_jobs
    from bot.retrain.triggers import runs

    settings = cli_settings()

    async def go(platform: Platform) -> None:
        queued = await unfinished_jobs(platform.sessions)
        table = Table(title=f"{len(queued)} queued or running jobs")
        for column in ("job", "queue", "task", "status", "tries", "since"):
            table.add_column(column)
        for job in queued:
            when = f"{job.since:%Y-%m-%d %H:%M:%S}" if job.since else ""
            table.add_row(str(job.id), job.queue, job.task, job.status, str(job.attempts), when)
        console.print(table)
        history = await runs(platform.sessions, last)
        table = Table(title="retrain runs")
        for column in ("run", "trigger", "status", "stage", "progress / outcome", "started"):
            table.add_column(column)
        for run in history:
            if run.status in ("queued", "running"):
                detail = run.progress or ""
            elif run.error:
                detail = run.error
            else:
                detail = "; ".join(d.get("summary", "") for d in (run.outcome or {}).values())
            started = f"{run.started_at:%Y-%m-%d %H:%M:%S}" if run.started_at else ""
            table.add_row(str(run.id), run.trigger, run.status, run.stage or "", detail, started)
        console.print(table)

    run_command(with_platform(settings, go))
