"""The procrastinate App, composed from the features' blueprints, and its workers.

Each feature declares its tasks next to its code (bot/generation/tasks.py,
bot/export/tasks.py, bot/retrain/tasks.py, bot/sweep.py); this module only puts them on
one App and runs a worker for a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import psycopg
from procrastinate import App, PsycopgConnector
from procrastinate.exceptions import ConnectorException
from procrastinate.worker import Worker

from bot.config import RetrainSettings, StorageSettings, WorkerSettings
from bot.db.engine import libpq_url
from bot.export.tasks import export_blueprint
from bot.generation.tasks import generation_blueprint
from bot.names import MAINTENANCE_QUEUE, PLATFORM
from bot.retrain.tasks import retrain_blueprint
from bot.sweep import sweep_blueprint

if TYPE_CHECKING:
    from bot.runtime import Platform

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
    for blueprint in (
        generation_blueprint(worker),
        export_blueprint(),
        retrain_blueprint(retrain),
        sweep_blueprint(storage),
    ):
        # No namespace: the tasks keep the names of bot.names, which queued jobs carry.
        app.add_tasks_from(blueprint, namespace="")
    return app


async def serve_maintenance(platform: Platform) -> None:
    """Run maintenance jobs until cancelled.

    On stop, a running export gets the worker's shutdown grace to finish; after that it
    is abandoned cleanly (its hidden folder removed, nothing recorded) and fails. A
    running retrain stops its trainer and is queued again by the reaper; it resumes in
    its run folder.
    """
    settings = platform.settings.worker
    app = build_app(
        platform.database_url, settings, platform.settings.retrain, platform.settings.storage
    )
    async with app.open_async():
        worker = one_job_worker(
            app,
            settings,
            role="prefloop-maintenance",
            queue=MAINTENANCE_QUEUE,
            context={PLATFORM: platform},
        )
        await run_worker(app, worker, settings)


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
        log.warning(
            "job worker %s: %s; starting it again in %.1f s", worker.worker_name, reason, pause
        )
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
