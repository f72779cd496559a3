"""The retrain loop's tasks: the retrain job, and its schedule, new-picks and agreement triggers.

They run on the maintenance queue in ``prefloop run``'s process. A retrain spends its
time in a trainer subprocess, so the event loop that serves Discord keeps running.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from procrastinate import Blueprint, JobContext

from bot.arena.agreement import TRIGGER, active_agreement, already_triggered, requested_by
from bot.config import RetrainSettings
from bot.names import (
    AGREEMENT_PERIODIC,
    AGREEMENT_TASK,
    CHECK_PERIODIC,
    CHECK_TASK,
    MAINTENANCE_QUEUE,
    PLATFORM,
    RETRAIN_TASK,
    SCHEDULE_PERIODIC,
    SCHEDULE_TASK,
)
from bot.retrain.stages import Retrain
from bot.retrain.triggers import RetrainRequest, picks_since_last_run, request_retrain

if TYPE_CHECKING:
    from bot.runtime import Platform

log = logging.getLogger(__name__)


def retrain_blueprint(retrain: RetrainSettings | None = None) -> Blueprint:
    """The retrain task; with ``retrain`` settings, the periodic triggers they turn on too
    (the maintenance worker's app has them, and its worker defers them on time)."""
    blueprint = Blueprint()

    @blueprint.task(name=RETRAIN_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
    async def retrain_job(context: JobContext, run_id: int) -> str:
        """Run the retrain loop's stages (see bot.retrain.stages)."""
        return await run_retrain_job(context.additional_context[PLATFORM], run_id)

    if retrain is not None and retrain.schedule:

        @blueprint.periodic(
            cron=retrain.schedule, periodic_id=SCHEDULE_PERIODIC, queueing_lock=SCHEDULE_TASK
        )
        @blueprint.task(name=SCHEDULE_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
        async def scheduled(context: JobContext, timestamp: int) -> str:
            """The schedule trigger: queue a retrain (unless one is queued or running)."""
            return await scheduled_retrain(context.additional_context[PLATFORM])

    if retrain is not None and retrain.new_picks:
        # One check waits in the queue at most (a retrain can hold it for hours).
        @blueprint.periodic(cron="* * * * *", periodic_id=CHECK_PERIODIC, queueing_lock=CHECK_TASK)
        @blueprint.task(name=CHECK_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
        async def new_picks(context: JobContext, timestamp: int) -> str:
            """The threshold trigger, checked every minute."""
            request = await check_new_picks(context.additional_context[PLATFORM])
            return f"retrain {request.run_id} queued" if request else "not yet"

    if retrain is not None and retrain.agreement_below is not None:

        @blueprint.periodic(
            cron="* * * * *", periodic_id=AGREEMENT_PERIODIC, queueing_lock=AGREEMENT_TASK
        )
        @blueprint.task(name=AGREEMENT_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
        async def low_agreement(context: JobContext, timestamp: int) -> str:
            """The live-agreement trigger, checked every minute."""
            request = await check_agreement(context.additional_context[PLATFORM])
            return f"retrain {request.run_id} queued" if request else "not needed"

    return blueprint


async def run_retrain_job(platform: Platform, run_id: int) -> str:
    """The body of a retrain job; its outcome goes to the log and Discord."""
    return await Retrain(platform, run_id, announce=platform.announce).run()


async def scheduled_retrain(platform: Platform) -> str:
    """The schedule trigger's body: queue a retrain, or say which one is on its way."""
    request = await request_retrain(platform.sessions, trigger="schedule")
    if request.created:
        log.info("scheduled retrain %d queued", request.run_id)
        return f"retrain {request.run_id} queued"
    return f"retrain {request.run_id} is already {request.status}"


async def check_new_picks(platform: Platform) -> RetrainRequest | None:
    """The threshold trigger: queue a retrain once ``retrain.new_picks`` picks arrived."""
    threshold = platform.settings.retrain.new_picks
    if threshold is None:
        return None
    waiting = await picks_since_last_run(platform.sessions)
    if waiting < threshold:
        return None
    request = await request_retrain(platform.sessions, trigger="new-picks")
    if request.created:
        log.info(
            "%d new picks (threshold %d): retrain %d queued", waiting, threshold, request.run_id
        )
    return request


async def check_agreement(platform: Platform) -> RetrainRequest | None:
    """The agreement trigger: queue a retrain when the active HPS agrees with fewer than
    ``retrain.agreement_below`` of the last ``arena.agreement_window`` live picks.

    Only over a full window (a few picks say little), and once per HPS version: the run
    records the HPS it was asked for (``requested_by`` ``hps:ID``), and a version that has
    had its run is not asked about again, whatever that run decided. A new HPS, promoted
    by that run or later, starts afresh.
    """
    threshold = platform.settings.retrain.agreement_below
    if threshold is None:
        return None
    found = await active_agreement(platform.sessions, platform.settings.arena.agreement_window)
    if found is None or not found.full or found.agreement is None:
        return None
    if found.agreement >= threshold:
        return None
    if await already_triggered(platform.sessions, found.hps_version_id):
        return None
    request = await request_retrain(
        platform.sessions, trigger=TRIGGER, requested_by=requested_by(found.hps_version_id)
    )
    if request.created:
        log.info(
            "live agreement %.1f%% is below %.1f%%: retrain %d queued",
            100 * found.agreement,
            100 * threshold,
            request.run_id,
        )
    return request
