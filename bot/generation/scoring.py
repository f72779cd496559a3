"""Live HPS scores: the worker scores each new image with the active HPS, for the agreement figure.

How often the serving HPS agrees with the people's picks (its online top-1) needs the
score it gave each image people then chose between, given before anyone picked. So the
generation worker scores every image it makes, right after the images are recorded and
announced, and keeps the scores in ``hps_scores``.

Scoring is best effort: generation never fails, and never waits long, because of it. The
HPS follows the registry like the adapter does (the next job after a promotion or a
rollback scores with the new one, no restart); a version that cannot be loaded is logged
once and skipped until another becomes active. One HPS is held at a time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import HPSScore, Image, ModelKind
from bot.registry import ModelRegistry
from bot.retrain.gpu_turn import spare_turn
from training.hps import HPSScorer

if TYPE_CHECKING:
    from bot.runtime import Platform

log = logging.getLogger(__name__)


class LiveScorer:
    """Scores a finished generation's images with the registry's active HPS; one per worker.

    ``shares_gpu``: training stages use this GPU too (bot/retrain/gpu_turn.py); then a
    generation is scored only when no stage holds the GPU, and otherwise left unscored
    rather than making the worker wait out a stage (or run out of memory beside it).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: ModelRegistry | None = None,
        *,
        device: str = "auto",
        cache_dir: Path | None = None,
        shares_gpu: bool = False,
    ) -> None:
        self.sessions = sessions
        self.registry = registry or ModelRegistry(sessions)
        self.device = device
        self.cache_dir = cache_dir
        self.shares_gpu = shares_gpu
        self.version: int | None = None  # the HPS version loaded now (None: none)
        self.scorer: HPSScorer | None = None
        self._broken: set[int] = set()  # versions that failed to load: logged once, skipped
        self._lock = asyncio.Lock()  # one model, one caller at a time

    async def sync(self) -> HPSScorer | None:
        """Hold the registry's active HPS, loading it if it changed; None = nothing to score with.

        Loading runs in a thread (seconds for a real HPS). The previous model is dropped
        before the next one loads, so the worker never holds two.
        """
        active = await self.registry.active(ModelKind.hps)
        wanted = active.id if active else None
        if wanted == self.version:
            return self.scorer
        self._drop()
        if active is None or active.id in self._broken:
            return None
        try:
            scorer = await asyncio.to_thread(
                HPSScorer.load, active.uri, device=self.device, cache_dir=self.cache_dir
            )
        except Exception as error:  # any failure: a bad file, a missing library, no memory
            self._broken.add(active.id)
            log.error("HPS version %s not loaded, images are not scored: %s", active.id, error)
            return None
        log.info("scoring new images with HPS version %s", active.id)
        self.scorer, self.version = scorer, active.id
        return scorer

    def _drop(self) -> None:
        if self.scorer is None:
            self.version = None
            return
        device = self.scorer.device
        self.scorer, self.version = None, None
        gc.collect()
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    async def score_generation(
        self, generation_id: int, prompt: str, images: Sequence[Any]
    ) -> None:
        """Score ``images`` (PIL, image ``k`` = index ``k``) of a recorded generation and keep
        the scores; never raises but for cancellation (a failure is logged and skipped)."""
        try:
            async with self._lock, spare_turn(self.sessions, self.shares_gpu) as turn:
                if not turn:
                    log.info(
                        "generation %s not scored: a training stage has the GPU", generation_id
                    )
                    return
                started = time.perf_counter()
                scorer = await self.sync()
                if scorer is None or self.version is None:
                    return
                version = self.version
                scores = await asyncio.to_thread(scorer.score, list(images), prompt)
            await self._record(generation_id, version, scores)
            log.debug(
                "generation %s scored by HPS version %s in %.3f s",
                generation_id,
                version,
                time.perf_counter() - started,
            )
        except Exception:
            log.exception("generation %s not scored", generation_id)

    async def _record(self, generation_id: int, version: int, scores: list[float]) -> None:
        async with self.sessions.begin() as session:
            found = await session.execute(
                select(Image.index, Image.id).where(Image.generation_id == generation_id)
            )
            ids = {index: image_id for index, image_id in found}
            rows = [
                {"image_id": ids[k], "hps_version_id": version, "score": score}
                for k, score in enumerate(scores)
                if k in ids  # forgotten meanwhile: nothing to score
            ]
            if rows:
                await session.execute(insert(HPSScore).values(rows).on_conflict_do_nothing())


def live_scorer(platform: Platform, *, shares_gpu: bool = False) -> LiveScorer | None:
    """The worker's scorer, on the generator's device; None when scoring is turned off."""
    if not platform.settings.worker.score_images:
        return None
    return LiveScorer(
        platform.sessions,
        platform.registry,
        device=platform.settings.generator.device,
        cache_dir=platform.settings.data_dir / "models",
        shares_gpu=shares_gpu,
    )
