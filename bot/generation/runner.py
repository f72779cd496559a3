"""Runs one generation job: claim the row, the pipeline call(s), store, record, announce.

The pipeline runs in a thread so the worker's event loop keeps its heartbeat and
notifications going. A job may run more than once (a retry after an error, or after its
worker died); every step is safe to repeat: seeds are fixed at submit time, image keys
are content hashes, and a finished generation is never redone.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.controls.corrupt import corrupt
from bot.controls.plan import ControlPlan
from bot.db import queries
from bot.db.models import (
    ControlKind,
    Generation,
    GenerationStatus,
    Image,
    ModelKind,
    User,
)
from bot.domain import Refusal
from bot.generation.failures import describe_failure, mark_failed
from bot.generation.scoring import LiveScorer
from bot.registry import ModelRegistry
from bot.retrain.gpu_turn import generation_turn
from bot.storage import Storage
from training.generator import Generator, GeneratorLoadError

log = logging.getLogger(__name__)

IMAGE_FORMAT = "png"  # lossless: the dataset keeps exactly what the model made


class PipelineStopped(Exception):
    """Raised in the pipeline's thread at the step after its job was cancelled."""


@dataclass(frozen=True)
class Work:
    """What a job needs to know about its generation."""

    generation_id: int
    prompt: str
    negative_prompt: str
    params: dict[str, Any]
    frontend: str


@dataclass(frozen=True)
class Made:
    """A job's images in index order, and what made each (a mixed set: two versions)."""

    images: list[Any]  # PIL images
    nsfw: list[bool]
    versions: list[int | None]  # the adapter's registry id; None = the bare base
    made_by: list[str]  # the generator version, as Generator.version names it


@dataclass(frozen=True)
class StoredImage:
    index: int
    key: str
    sha256: str
    seed: int
    width: int
    height: int
    nsfw: bool
    adapter_version_id: int | None = None
    generator_version: str | None = None


class GenerationRunner:
    """Turns queued generations into stored images, one job at a time per pipeline."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        storage: Storage,
        generator: Generator,
        *,
        progress_interval: float = 1.0,
        registry: ModelRegistry | None = None,
        scorer: LiveScorer | None = None,
    ) -> None:
        self.sessions = sessions
        self.registry = registry or ModelRegistry(sessions)  # which adapter serves
        self.storage = storage
        self.generator = generator
        self.progress_interval = progress_interval
        self.adapter_version: int | None = None  # the registry's adapter now applied
        self.shares_gpu = False  # with training: see bot/retrain/gpu_turn.py
        self.scorer = scorer  # the active HPS scores each new image; None = no scoring

    async def sync_adapter(self) -> None:
        """Apply the registry's active generator adapter if it changed since the last job.

        A promotion or rollback reaches the next job without a restart. An adapter that
        cannot be loaded is logged and skipped: the worker keeps serving what it had.
        """
        active = await self.registry.active(ModelKind.generator_adapter)
        wanted = active.id if active else None
        if wanted == self.adapter_version:
            return
        try:
            if active is None:
                await asyncio.to_thread(self.generator.clear_adapter)
            else:
                await asyncio.to_thread(self.generator.apply_adapter, active.uri)
        except GeneratorLoadError as error:
            log.error("active adapter version %s not applied: %s", wanted, error)
            return
        log.info("now serving adapter version %s", wanted)
        self.adapter_version = wanted

    async def run(self, generation_id: int, *, final_attempt: bool = True) -> str:
        """Make the images of ``generation_id``; returns ``done``, ``failed`` or ``skipped``.

        An error is re-raised so the queue can retry the job; on the final attempt the
        generation is first marked failed with a message the member will see.
        """
        try:
            started = time.time()
            await self.sync_adapter()
            work = await self._claim(generation_id)
            if work is None:
                log.info("generation %s is finished or gone; nothing to do", generation_id)
                return "skipped"
            pipeline_start = time.time()
            made = await self._generate(work)
            timings = {"started": started, "pipeline_start": pipeline_start}
            timings["pipeline_s"] = time.time() - pipeline_start
            stored = await self._store(work, made)
            timings["job_s"] = time.time() - started
            outcome = await self._finish(work, stored, timings)
            if outcome == "done" and self.scorer is not None:  # announced: members wait no more
                await self.scorer.score_generation(generation_id, work.prompt, made.images)
            return outcome
        except BaseException as error:  # cancellation too: a stopped worker's last try
            log.error(
                "generation %s failed (final attempt: %s): %r", generation_id, final_attempt, error
            )
            if final_attempt:
                # shielded: the member must hear about it even while we are being cancelled
                await asyncio.shield(
                    mark_failed(self.sessions, generation_id, describe_failure(error))
                )
            raise

    async def _claim(self, generation_id: int) -> Work | None:
        async with self.sessions.begin() as session:
            row = (
                await session.execute(
                    update(Generation)
                    .where(
                        Generation.id == generation_id,
                        Generation.status.in_(queries.UNFINISHED),
                        User.id == Generation.requested_by,
                    )
                    .values(
                        status=GenerationStatus.running,
                        started_at=func.now(),
                        attempts=Generation.attempts + 1,
                        generator_version=self.generator.version,
                        adapter_version_id=self.adapter_version,
                        params=self._served_params(),
                    )
                    .returning(
                        Generation.prompt,
                        Generation.negative_prompt,
                        Generation.params,
                        User.frontend,
                    )
                )
            ).first()
            if row is None:
                return None
            work = Work(generation_id, row[0], row[1], row[2], str(row[3]))
            await _notify_progress(session, work, 0, total_steps(work.params))
        return work

    def _served_params(self) -> Any:
        """The set's params with the negative prompt the serving adapter adds (as
        ``negative_prefix``), so the set says how it was made. A mixed set (several
        versions, each with its own) and a generator without one carry none: a key an
        earlier attempt wrote, by another adapter, is removed."""
        without = Generation.params.op("-")("negative_prefix")
        prefix = self.generator.negative_prefix
        if not prefix:
            return without
        return case(
            (Generation.params.has_key("versions"), without),
            else_=without.op("||")(func.jsonb_build_object("negative_prefix", prefix)),
        )

    async def _generate(self, work: Work) -> Made:
        """The pipeline calls, in a thread; a cancelled job stops at its next step.

        A plain set is one batched call by the serving version. A mixed set (its
        ``params["versions"]``) is one call per version, each on the same loaded pipeline
        with that version's adapter switched on; progress counts the steps of all. A
        control set (``params["control"]``) is a plain set whose image ``worse`` is then
        made worse (:meth:`_worse`; a wrong prompt's extra call shows no progress).
        A thread cannot be cancelled: without the stop, a worker told to quit would wait
        for the whole call (minutes on a CPU) after its shutdown grace, however short.
        """
        loop = asyncio.get_running_loop()
        params = work.params
        steps = int(params["steps"])
        total = total_steps(params)
        last_sent = 0.0
        stop = threading.Event()
        done_before = 0  # steps of the calls already made

        def on_step(step: int, _: int) -> None:
            nonlocal last_sent
            if stop.is_set():
                raise PipelineStopped(f"generation {work.generation_id} was cancelled")
            now = time.monotonic()
            step += done_before
            if step < total and now - last_sent < self.progress_interval:
                return
            last_sent = now
            asyncio.run_coroutine_threadsafe(self._progress(work, step, total), loop)

        def unseen(step: int, _: int) -> None:
            """A control set's extra call: stoppable, but it shows the member nothing (a
            progress total longer than a plain set's would give the control away)."""
            if stop.is_set():
                raise PipelineStopped(f"generation {work.generation_id} was cancelled")

        options = {
            "negative_prompt": work.negative_prompt,
            "steps": params["steps"],
            "guidance": params["guidance"],
            "width": params.get("width"),
            "height": params.get("height"),
            "on_step": on_step,
        }
        seeds: list[int] = params["seeds"]
        wanted: list[int | None] | None = params.get("versions")
        control = ControlPlan.from_params(params)

        def plain() -> Made:
            made = self.generator.generate(work.prompt, seeds, **options)
            images, nsfw = list(made.images), list(made.nsfw)
            if control is not None:
                k = control.worse
                quiet = {**options, "on_step": unseen}
                images[k], nsfw[k] = self._worse(control, images[k], nsfw[k], seeds[k], quiet)
            n = len(images)
            return Made(images, nsfw, [self.adapter_version] * n, [self.generator.version] * n)

        def mixed(versions: list[int | None], folders: dict[int | None, str | None]) -> Made:
            nonlocal done_before
            images: list[Any] = [None] * len(seeds)
            nsfw = [False] * len(seeds)
            made_by = [""] * len(seeds)
            for version in dict.fromkeys(versions):  # each version once, in first-seen order
                if stop.is_set():
                    raise PipelineStopped(f"generation {work.generation_id} was cancelled")
                folder = folders[version]
                indexes = [k for k, v in enumerate(versions) if v == version]
                made = self.generator.generate_as(
                    folder, work.prompt, [seeds[k] for k in indexes], **options
                )
                for k, image, flagged in zip(indexes, made.images, made.nsfw, strict=True):
                    images[k], nsfw[k] = image, flagged
                    made_by[k] = self.generator.version_of(folder)
                done_before += steps
            return Made(images, nsfw, versions, made_by)

        async with generation_turn(self.sessions, self.shares_gpu):
            try:
                if wanted is None:
                    return await asyncio.to_thread(plain)
                folders = await self._folders(wanted)
                return await asyncio.to_thread(mixed, wanted, folders)
            finally:
                stop.set()  # still running only if we were cancelled: it ends at its next step

    def _worse(
        self, control: ControlPlan, image: Any, flagged: bool, seed: int, options: dict[str, Any]
    ) -> tuple[Any, bool]:
        """A control set's worse image, in the pipeline's thread: ``image`` corrupted, or,
        for a wrong prompt, the image of that prompt from the same seed (with its own flag).
        """
        if control.kind != ControlKind.wrong_prompt:
            return corrupt(image, control.kind, seed), flagged
        assert control.prompt is not None  # a wrong_prompt plan always has one
        made = self.generator.generate(control.prompt, [seed], **options)
        return made.images[0], made.nsfw[0]

    async def _folders(self, versions: list[int | None]) -> dict[int | None, str | None]:
        """Each version's adapter folder (None: the bare base), loaded before the calls.

        A version that cannot be found or loaded fails the job: a mixed set is never
        made with another version than it says.
        """
        folders: dict[int | None, str | None] = {}
        for version in dict.fromkeys(versions):
            if version is None:
                folders[version] = None
                continue
            try:
                found = await self.registry.get(version)
            except Refusal as refusal:
                raise GeneratorLoadError(f"version {version}: {refusal.message}") from None
            if found.kind != ModelKind.generator_adapter.value:
                raise GeneratorLoadError(f"version {version} is a {found.kind}, not an adapter")
            await asyncio.to_thread(self.generator.preload, found.uri)
            folders[version] = found.uri
        return folders

    async def _progress(self, work: Work, step: int, total: int) -> None:
        try:
            async with self.sessions.begin() as session:
                await _notify_progress(session, work, step, total)
        except Exception:  # progress is best effort; the job must not fail for it
            log.warning("could not announce progress of generation %s", work.generation_id)

    async def _store(self, work: Work, made: Made) -> list[StoredImage]:
        encoded = await asyncio.gather(*(asyncio.to_thread(_encode, im) for im in made.images))
        keys = await asyncio.gather(*(self.storage.put(data, IMAGE_FORMAT) for data in encoded))
        seeds = work.params["seeds"]
        return [
            StoredImage(
                k,
                key,
                digest,
                seeds[k],
                image.width,
                image.height,
                made.nsfw[k],
                made.versions[k],
                made.made_by[k],
            )
            for k, ((key, digest), image) in enumerate(zip(keys, made.images, strict=True))
        ]

    async def _finish(
        self, work: Work, stored: list[StoredImage], timings: dict[str, float]
    ) -> str:
        """Images, status and announcement in one transaction, so all or none are seen.

        Only a generation still ``running`` is recorded (the UPDATE takes its row lock), so
        of two runs of one job, the second records nothing.
        """
        async with self.sessions.begin() as session:
            finished = await session.scalar(
                update(Generation)
                .where(
                    Generation.id == work.generation_id,
                    Generation.status == GenerationStatus.running,
                )
                .values(
                    status=GenerationStatus.done,
                    finished_at=func.now(),
                    error=None,
                    timings=timings,
                )
                .returning(Generation.id)
            )
            if finished is not None:
                await session.execute(
                    insert(Image),
                    [
                        {
                            "generation_id": work.generation_id,
                            "index": s.index,
                            "storage_key": s.key,
                            "sha256": s.sha256,
                            "seed": s.seed,
                            "width": s.width,
                            "height": s.height,
                            "nsfw": s.nsfw,
                            "adapter_version_id": s.adapter_version_id,
                            "generator_version": s.generator_version,
                        }
                        for s in stored
                    ],
                )
                await queries.notify_finished(session, work.generation_id, "done", work.frontend)
                return "done"
            status = await session.scalar(
                select(Generation.status).where(Generation.id == work.generation_id)
            )
        # Deleted while it ran (a member forgotten), or finished by another run.
        log.info("generation %s is %s; images not recorded", work.generation_id, status or "gone")
        if status is None:
            await self._delete_unused([s.key for s in stored])
        return "skipped"

    async def _delete_unused(self, keys: list[str]) -> None:
        async with self.sessions() as session:
            used = set(
                await session.scalars(select(Image.storage_key).where(Image.storage_key.in_(keys)))
            )
        for key in set(keys) - used:
            await self.storage.delete(key)


def total_steps(params: dict[str, Any]) -> int:
    """A job's pipeline steps as members see them: one call's, times the versions of a
    mixed set (a control set's extra call is not shown: it would give the set away)."""
    versions = params.get("versions")
    calls = len(set(versions)) if versions else 1
    return int(params["steps"]) * calls


async def _notify_progress(session: AsyncSession, work: Work, step: int, total: int) -> None:
    await queries.notify(
        session,
        queries.PROGRESS_CHANNEL,
        {"id": work.generation_id, "step": step, "total": total, "frontend": work.frontend},
    )


def _encode(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=IMAGE_FORMAT, compress_level=4)
    return buffer.getvalue()
