"""A generation worker: one pipeline, loaded once, serving the ``generate`` queue.

Besides procrastinate's own loop, each worker looks for jobs whose worker died (no
heartbeat for ``stalled_after`` seconds) and puts them back in the queue, or fails them
for good once they have used up their attempts, so no generation waits forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import TYPE_CHECKING

from procrastinate import App
from procrastinate.jobs import Status

from bot.generation import GenerationRunner, mark_failed
from bot.jobs.app import RUNNER, build_app
from bot.service import GENERATE_QUEUE, GENERATE_TASK

if TYPE_CHECKING:
    from bot.runtime import Platform

log = logging.getLogger(__name__)


async def load_generator(platform: Platform):  # -> training.generator.Generator
    """Load the configured pipeline once (in a thread: it takes seconds to minutes)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from training.generator import Generator

    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()  # per-step bars would flood a server's log
    gen = platform.settings.generator
    return await asyncio.to_thread(
        Generator.load,
        gen.model,
        cache_dir=platform.settings.data_dir / "models",
        device=gen.device,
        dtype=gen.dtype,
        safety_checker=gen.safety_checker,
    )


async def serve_worker(platform: Platform, *, concurrency: int | None = None) -> None:
    """Run a worker until cancelled; on cancel, running jobs finish (or are re-queued)."""
    settings = platform.settings.worker
    generator = await load_generator(platform)
    runner = GenerationRunner(
        platform.sessions,
        platform.storage,
        generator,
        progress_interval=settings.progress_interval,
    )
    app = build_app(platform.database_url, settings)
    async with app.open_async():
        reaper = asyncio.create_task(_reap_forever(app, platform), name="stalled-job reaper")
        try:
            await app.run_worker_async(
                name=f"prefloop@{socket.gethostname()}:{os.getpid()}",
                queues=[GENERATE_QUEUE],
                concurrency=concurrency or settings.concurrency,
                additional_context={RUNNER: runner},
                install_signal_handlers=False,
                update_heartbeat_interval=settings.heartbeat_interval,
                stalled_worker_timeout=settings.stalled_after,
                shutdown_graceful_timeout=settings.shutdown_grace,
            )
        finally:
            reaper.cancel()


async def recover_stalled_jobs(app: App, platform: Platform) -> list[int]:
    """Re-queue jobs whose worker died; fail those that have no attempt left."""
    settings = platform.settings.worker
    stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=settings.stalled_after)
    recovered = []
    for job in stalled:
        try:
            if job.attempts + 1 >= settings.max_attempts:
                await app.job_manager.finish_job(job, status=Status.FAILED, delete_job=False)
                if job.task_name == GENERATE_TASK:
                    await mark_failed(
                        platform.sessions,
                        int(job.task_kwargs["generation_id"]),
                        f"The worker stopped {job.attempts + 1} times while making these "
                        "images; giving up.",
                    )
            else:
                await app.job_manager.retry_job(job)
        except Exception as error:  # another worker got there first
            log.debug("job %s already handled: %s", job.id, error)
            continue
        log.warning("job %s (%s) lost its worker; recovered", job.id, job.task_name)
        recovered.append(job.id)
    return recovered


async def _reap_forever(app: App, platform: Platform) -> None:
    interval = max(platform.settings.worker.stalled_after / 2, 0.5)
    while True:
        try:
            await recover_stalled_jobs(app, platform)
        except Exception:
            log.exception("looking for stalled jobs failed; trying again later")
        await asyncio.sleep(interval)
