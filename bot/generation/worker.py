"""A generation worker: one pipeline, loaded once, serving the ``generate`` queue.

Besides procrastinate's own loop, each worker looks for jobs whose worker died (no
heartbeat for ``stalled_after`` seconds), on every queue, the maintenance queue's too,
and puts them back in the queue, or fails them for good once they have used up their
attempts, so no generation waits forever; a retrain's own records are the retrain
loop's business (bot/retrain/triggers.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from procrastinate import App
from procrastinate.jobs import Job

from bot.db import queries
from bot.generation.failures import mark_failed_in
from bot.generation.runner import GenerationRunner
from bot.generation.scoring import live_scorer
from bot.jobs.app import build_app, one_job_worker, run_worker
from bot.names import GENERATE_QUEUE, GENERATE_TASK, RETRAIN_TASK, RUNNER
from bot.retrain.gpu_turn import shares_gpu
from bot.retrain.people import stop_run_comparison_in
from bot.retrain.run_data import remove_ended_runs_data
from bot.retrain.triggers import mark_abandoned_in, recover_orphaned_runs
from bot.runtime import frozen_imports, settle_heap
from training.generator import Generator, GeneratorLoadError

if TYPE_CHECKING:
    from bot.config import GeneratorSettings
    from bot.runtime import Platform

log = logging.getLogger(__name__)


async def load_generator(platform: Platform) -> Generator:
    """Load the configured pipeline once, entirely in a thread (see :func:`load_pipeline`)."""
    gen = platform.settings.generator
    return await asyncio.to_thread(load_pipeline, gen, platform.settings.data_dir / "models")


def load_pipeline(gen: GeneratorSettings, cache_dir: Path) -> Generator:
    """Import the model libraries, load the pipeline and settle the heap; blocking.

    It takes seconds to minutes (the imports alone cost ~8 s of CPU on a small machine),
    so a worker calls it in a thread: on the event loop it would stall the worker's
    heartbeat, and every Discord interaction of a bot sharing the loop.
    """
    try:
        with frozen_imports():
            from diffusers import DiffusionPipeline  # noqa: F401  (what Generator.load uses)
            from diffusers.utils import logging as diffusers_logging
            from transformers.utils import logging as transformers_logging
    except ImportError as error:
        raise GeneratorLoadError(
            f"a worker needs the model libraries ({error.name} is missing): "
            "pip install 'prefloop[ml]'"
        ) from None

    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()  # per-step bars would flood a server's log
    generator = Generator.load(
        gen.model,
        cache_dir=cache_dir,
        device=gen.device,
        dtype=gen.dtype,
        safety_checker=gen.safety_checker,
        adapter=gen.adapter,
    )
    settle_heap()  # the pipeline is loaded: keep the collector off it
    return generator


async def serve_worker(platform: Platform, on_ready: Callable[[], None] | None = None) -> None:
    """Run a worker until cancelled; on cancel, running jobs finish (or are re-queued).

    One job at a time: the pipeline is not safe to call from two threads at once, so
    more throughput means more workers (one per GPU), not more concurrency.
    ``on_ready`` is called once the pipeline is loaded and the worker takes jobs.
    """
    settings = platform.settings.worker
    generator = await load_generator(platform)
    runner = GenerationRunner(
        platform.sessions,
        platform.storage,
        generator,
        progress_interval=settings.progress_interval,
        registry=platform.registry,
        scorer=live_scorer(platform, shares_gpu=shares_gpu(platform.settings)),
    )
    runner.shares_gpu = shares_gpu(platform.settings)
    app = build_app(platform.database_url, settings)
    async with app.open_async():
        worker = one_job_worker(
            app, settings, role="prefloop", queue=GENERATE_QUEUE, context={RUNNER: runner}
        )
        reaper = asyncio.create_task(_reap_forever(app, platform), name="stalled-job reaper")
        if on_ready is not None:
            on_ready()
        try:
            await run_worker(app, worker, settings)
        finally:
            reaper.cancel()


async def recover_stalled_jobs(app: App, platform: Platform) -> list[int]:
    """Re-queue jobs whose worker died; fail those that have no attempt left.

    Each job is handled in one transaction that first checks it is still running under
    the worker seen dead, so a job another worker already recovered (and a third may be
    running now) is left alone.
    """
    settings = platform.settings.worker
    stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=settings.stalled_after)
    recovered: list[int] = []
    for job in stalled:
        assert job.id is not None  # a job read from the database has one
        give_up = job.attempts + 1 >= settings.max_attempts
        async with platform.sessions.begin() as session:
            if not await queries.end_stalled_job(session, job.id, job.worker_id, give_up=give_up):
                continue  # someone else got there first
            if give_up and job.task_name == RETRAIN_TASK:
                run_id, why = _id_arg(job, "run_id"), "its worker stopped too many times"
                await mark_abandoned_in(session, run_id, why)
                await stop_run_comparison_in(session, run_id, why)  # mixed sets end with it
            if give_up and job.task_name == GENERATE_TASK:
                await mark_failed_in(
                    session,
                    _id_arg(job, "generation_id"),
                    f"The worker stopped {job.attempts + 1} times while making these "
                    "images; giving up.",
                )
        if give_up and job.task_name == RETRAIN_TASK:
            await remove_ended_runs_data(platform)  # failed for good: its copy of the picks goes
        log.warning(
            "job %s (%s) lost its worker; %s",
            job.id,
            job.task_name,
            "failed for good" if give_up else "queued again",
        )
        recovered.append(job.id)
    await recover_orphaned_runs(platform.sessions)  # a retrain whose job ended: run it again
    async with platform.sessions.begin() as session:
        for generation_id, frontend in await queries.fail_abandoned_generations(session):
            log.warning("generation %s outlived its job; marked failed", generation_id)
            await queries.notify_finished(session, generation_id, "failed", frontend)
    return recovered


def _id_arg(job: Job, name: str) -> int:
    """An id the job was deferred with (its ``task_kwargs`` are JSON)."""
    value = job.task_kwargs[name]
    if not isinstance(value, int | str):
        raise TypeError(f"job {job.id}: {name} is {value!r}, not an id")
    return int(value)


async def _reap_forever(app: App, platform: Platform) -> None:
    interval = max(platform.settings.worker.stalled_after / 2, 0.5)
    while True:
        try:
            await recover_stalled_jobs(app, platform)
        except Exception:
            log.exception("looking for stalled jobs failed; trying again later")
        await asyncio.sleep(interval)
