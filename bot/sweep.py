"""The store sweep as a periodic maintenance task (``storage.sweep_schedule``, daily).

The sweep itself is :meth:`bot.service.CollectionService.sweep_store`, beside
``forget_user``: it deletes the files a crash or a lost race left in the store, a
forget's failed file deletes among them. ``prefloop store sweep`` runs it by hand.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from procrastinate import Blueprint, JobContext

from bot.config import StorageSettings
from bot.names import MAINTENANCE_QUEUE, PLATFORM, SWEEP_PERIODIC, SWEEP_TASK

if TYPE_CHECKING:
    from bot.runtime import Platform

log = logging.getLogger(__name__)


def sweep_blueprint(storage: StorageSettings | None = None) -> Blueprint:
    """The sweep task, on the schedule of ``storage`` (none without it, or when it is off)."""
    blueprint = Blueprint()
    if storage is None or not storage.sweep_schedule:
        return blueprint

    @blueprint.periodic(
        cron=storage.sweep_schedule, periodic_id=SWEEP_PERIODIC, queueing_lock=SWEEP_TASK
    )
    @blueprint.task(name=SWEEP_TASK, queue=MAINTENANCE_QUEUE, pass_context=True)
    async def sweep(context: JobContext, timestamp: int) -> str:
        """Delete store files that no row references (see CollectionService.sweep_store)."""
        return await sweep_store_job(context.additional_context[PLATFORM])

    return blueprint


async def sweep_store_job(platform: Platform) -> str:
    """The body of the periodic store sweep: delete files no row references (see its docs)."""
    swept = await platform.service.sweep_store()
    summary = f"store sweep: {swept.files} files, {swept.deleted} unreferenced ones deleted"
    if kept := swept.unreferenced - swept.deleted:
        summary += f", {kept} written again meanwhile (kept)"
    log.info("%s", summary)
    return summary
