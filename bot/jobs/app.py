"""The procrastinate app and prefloop's tasks on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

import psycopg
from procrastinate import App, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import ConnectorException
from procrastinate.worker import Worker

from bot.config import RetrainSettings, StorageSettings, WorkerSettings
from bot.db.engine import libpq_url
from bot.export.tasks import (
    run_export_job,
    run_retrain_job,
    scheduled_retrain,
    sweep_store_job,
)
from bot.names import (
    CHECK_TASK,
    EXPORT_TASK,
    GENERATE_QUEUE,
    GENERATE_TASK,
    MAINTENANCE_QUEUE,
    PLATFORM,
    RETRAIN_TASK,
    RUNNER,
    SCHEDULE_TASK,
    SWEEP_TASK,
)
from bot.retrain import check_new_picks

RESTART_PAUSE, MAX_RESTART_PAUSE = 0.5, 30.0  # seconds before a stopped worker starts again

log = logging.getLogger(__name__)


def build_app(
    database_url: str,
    worker: WorkerSettings,
    retrain: RetrainSettings | None = None,
    storage: StorageSettings | None = None,
) -> App:
    """A procrastinate app on ``database_url`` with prefloop's tasks registered.

    With ``retrain`` settings, the retrain loop's periodic triggers are registered too,
    and with ``storage`` settings the store sweep's schedule (the maintenance worker's
    app does; its worker then defers them on time).
    """
    app = App(connector=PsycopgConnector(conninfo=libpq_url(database_url), min_size=1, max_size=4))
    # procrastinate counts retries: max_attempts=N there means N+1 runs in all.
    retries = worker.max_attempts - 1
    retry = RetryStrategy(max_attempts=retries, wait=2) if retries else False

    @app.task(name=GENERATE_TASK, queue=GENERATE_QUEUE, pass_context=True, retry=retry)
    async def generate(context: JobContext, generation_id: int) -> str:
        """Make the images of one generation (see bot.generation.runner)."""
        final = context.job.attempts >= retries
        return await context.additional_context[RUNNER].run(generation_id, final_attempt=final)

    @app.task(name=EXPORT_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
    async def export(context: JobContext, **args: object) -> str:
        """Write a dataset export (see bot.export); admins queue it with /admin export."""
        return await run_export_job(context.additional_context[PLATFORM], **args)

    @app.task(name=RETRAIN_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
    async def retrain_job(context: JobContext, run_id: int) -> str:
        """Run the retrain loop's stages (see bot.retrain)."""
        return await run_retrain_job(context.additional_context[PLATFORM], run_id)

    if retrain is not None and retrain.schedule:

        @app.periodic(cron=retrain.schedule, periodic_id="retrain-schedule",
                      queueing_lock=SCHEDULE_TASK)  # fmt: skip
        @app.task(name=SCHEDULE_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
        async def scheduled(context: JobContext, timestamp: int) -> str:
            """The schedule trigger: queue a retrain (unless one is queued or running)."""
            return await scheduled_retrain(context.additional_context[PLATFORM])

    if retrain is not None and retrain.new_picks:
        # One check waits in the queue at most (a retrain can hold it for hours).
        @app.periodic(cron="* * * * *", periodic_id="retrain-new-picks", queueing_lock=CHECK_TASK)
        @app.task(name=CHECK_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
        async def new_picks(context: JobContext, timestamp: int) -> str:
            """The threshold trigger, checked every minute."""
            request = await check_new_picks(context.additional_context[PLATFORM])
            return f"retrain {request.run_id} queued" if request else "not yet"

    if storage is not None and storage.sweep_schedule:

        @app.periodic(cron=storage.sweep_schedule, periodic_id="store-sweep",
                      queueing_lock=SWEEP_TASK)  # fmt: skip
        @app.task(name=SWEEP_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
        async def sweep(context: JobContext, timestamp: int) -> str:
            """Delete store files that no row references (see CollectionService.sweep_store)."""
            return await sweep_store_job(context.additional_context[PLATFORM])

    return app


def one_job_worker(
    app: App, settings: WorkerSettings, *, role: str, queue: str, context: dict[str, Any]
) -> Worker:
    """A worker for one queue, one job at a time, with prefloop's heartbeat and grace."""
    return Worker(
        app,
        name=f"{role}@{socket.gethostname()}:{os.getpid()}",
        queues=[queue],
        concurrency=1,
        additional_context=context,
        install_signal_handlers=False,
        update_heartbeat_interval=settings.heartbeat_interval,
        stalled_worker_timeout=settings.stalled_after,
        shutdown_graceful_timeout=settings.shutdown_grace,
    )


async def run_worker(app: App, worker: Worker, settings: WorkerSettings) -> None:
    """Run ``worker`` until cancelled; then let its job finish within the shutdown grace.

    procrastinate stops its heartbeat before draining; this keeps beating meanwhile, so
    that no other process mistakes the worker for dead and runs its job a second time.

    A worker that loses the database (a restart, a failover: its heartbeat, its job
    fetch or its registration fails) stops, or raises; it is started again after a
    pause, with backoff while the database stays away, instead of ending the process.
    """
    pause = RESTART_PAUSE
    while True:
        started = time.monotonic()
        run = asyncio.create_task(worker.run(), name="procrastinate worker")
        try:
            await asyncio.shield(run)
            reason = "it stopped (a heartbeat or the job listener failed)"
        except asyncio.CancelledError:
            beating = asyncio.create_task(_heartbeat_while_draining(app, worker, settings))
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            beating.cancel()
            raise
        except (ConnectorException, psycopg.OperationalError) as error:
            reason = f"it lost the database ({_first_line(error)})"
        if time.monotonic() - started > MAX_RESTART_PAUSE:
            pause = RESTART_PAUSE  # it had been running fine: this is a new outage
        log.warning("job worker %s: %s; starting it again in %.1f s", worker.worker_name,
                    reason, pause)  # fmt: skip
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_RESTART_PAUSE)


def _first_line(error: BaseException) -> str:
    cause = error.__cause__ or error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


async def _heartbeat_while_draining(app: App, worker: Worker, settings: WorkerSettings) -> None:
    while worker.worker_id is not None:
        with contextlib.suppress(Exception):
            await app.job_manager.update_heartbeat(worker.worker_id)
        await asyncio.sleep(settings.heartbeat_interval)
