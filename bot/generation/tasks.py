"""The generate task: one job per generation, run by a generation worker's runner."""

from __future__ import annotations

from procrastinate import Blueprint, JobContext, RetryStrategy

from bot.config import WorkerSettings
from bot.generation.runner import GenerationRunner
from bot.names import GENERATE_QUEUE, GENERATE_TASK, RUNNER


def generation_blueprint(worker: WorkerSettings) -> Blueprint:
    """The generate task, run up to ``worker.max_attempts`` times in all.

    A new blueprint for each app (an app takes its tasks over), as the retry depends on
    the settings.
    """
    blueprint = Blueprint()
    # procrastinate counts retries: max_attempts=N there means N+1 runs in all.
    retries = worker.max_attempts - 1
    retry = RetryStrategy(max_attempts=retries, wait=2) if retries else False

    @blueprint.task(name=GENERATE_TASK, queue=GENERATE_QUEUE, pass_context=True, retry=retry)
    async def generate(context: JobContext, generation_id: int) -> str:
        """Make the images of one generation (see bot.generation.runner)."""
        runner: GenerationRunner = context.additional_context[RUNNER]
        final = context.job.attempts >= retries
        return await runner.run(generation_id, final_attempt=final)

    return blueprint
