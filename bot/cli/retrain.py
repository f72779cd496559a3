"""``prefloop retrain`` (queue the retrain loop, optionally follow it) and ``prefloop jobs``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Table

from bot.cli.support import cli_settings, console, err, with_platform
from bot.cli.support import run as run_command


def retrain(
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the run's stages until it ends.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 24 * 3600,
) -> None:
    """Queue a retrain: export, refit HPS, re-adapt the generator, promote what wins."""
    from bot.retrain import request_retrain

    settings = cli_settings()

    async def go(platform: Any) -> None:
        request = await request_retrain(platform.sessions, trigger="cli",
                                        requested_by="cli")  # fmt: skip
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
                status = await _follow(platform, request.run_id)
        except TimeoutError:
            err.print(f"[yellow]gave up waiting; `prefloop jobs` shows retrain {request.run_id}[/]")
            raise typer.Exit(1) from None
        if status != "succeeded":
            raise typer.Exit(1)

    run_command(with_platform(settings, go))


async def _follow(platform: Any, run_id: int) -> str:
    from bot.db.models import RetrainRun

    shown: tuple[Any, ...] = ()
    while True:
        async with platform.sessions() as session:
            run = await session.get(RetrainRun, run_id)
        assert run is not None
        now = (run.status, run.stage, run.progress)
        if now != shown:
            shown = now
            err.print(f"retrain {run_id}: {run.status}"
                      + (f", {run.stage}" if run.stage else "")
                      + (f": {run.progress}" if run.progress else ""),
                      markup=False, highlight=False)  # fmt: skip
        if run.status not in ("queued", "running"):
            for decision in (run.outcome or {}).values():
                console.print(decision.get("summary", ""), markup=False, highlight=False)
            if run.error:
                console.print(f"failed: {run.error}", markup=False, highlight=False)
            return str(run.status)
        await asyncio.sleep(1.0)


def jobs(
    last: Annotated[int, typer.Option(help="How many past retrain runs to list.")] = 5,
) -> None:
    """Queued and running jobs, and the retrain runs: stage, progress, outcome."""
    from bot.jobs.status import unfinished_jobs
    from bot.retrain import runs

    settings = cli_settings()

    async def go(platform: Any) -> None:
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
            table.add_row(str(run.id), run.trigger, run.status, run.stage or "", detail,
                          started)  # fmt: skip
        console.print(table)

    run_command(with_platform(settings, go))
