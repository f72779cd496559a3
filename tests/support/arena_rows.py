"""Rows of the arena built directly: versions, comparisons, mixed sets, picks, HPS scores.

The worker and the service make these in production; arena tests need many of them, with
chosen versions and chosen picks, in a few milliseconds.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.arena.versions import Version
from bot.db.models import (
    Choice,
    Comparison,
    Frontend,
    Generation,
    GenerationStatus,
    HPSScore,
    Image,
    ModelKind,
    ModelStatus,
    ModelVersion,
    User,
)

_names = itertools.count(1)
START = datetime(2026, 1, 1, tzinfo=UTC)


async def add_version(
    platform: Any, kind: str = "generator_adapter", *, active: bool = False
) -> int:
    async with platform.sessions.begin() as session:
        row = ModelVersion(
            kind=ModelKind(kind),
            uri=f"/models/{kind}-{next(_names)}",
            status=ModelStatus.active if active else ModelStatus.candidate,
        )
        session.add(row)
        await session.flush()
        return row.id


async def add_users(platform: Any, count: int) -> list[int]:
    async with platform.sessions.begin() as session:
        rows = [
            User(frontend=Frontend.cli, external_id=f"rater{next(_names)}") for _ in range(count)
        ]
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]


async def add_comparison(
    platform: Any, baseline: Version, contender: Version, *, status: str = "open"
) -> int:
    async with platform.sessions.begin() as session:
        row = Comparison(
            baseline_version_id=baseline, contender_version_id=contender, status=status
        )
        session.add(row)
        await session.flush()
        return row.id


async def add_set(
    platform: Any,
    requester: int,
    versions: list[Version],
    picks: dict[int, int | str],
    *,
    comparison_id: int | None = None,
    prompt: str = "a red cat",
    at: datetime = START,
    scores: dict[int, list[float]] | None = None,
) -> int:
    """A done generation whose image k comes from ``versions[k]``; ``picks``: user -> image
    index, or "tie" / "none" (voted in dict order, a second apart); ``scores``: HPS version
    -> per image."""
    async with platform.sessions.begin() as session:
        generation = Generation(
            prompt=prompt,
            n_images=len(versions),
            params={"versions": versions, "seeds": list(range(len(versions)))},
            comparison_id=comparison_id,
            status=GenerationStatus.done,
            requested_by=requester,
            requested_at=at,
            finished_at=at,
        )
        session.add(generation)
        await session.flush()
        images = [
            Image(
                generation_id=generation.id,
                index=k,
                storage_key=f"g{generation.id}/{k}.png",
                sha256=f"{generation.id:032x}{k:032x}",
                seed=k,
                width=64,
                height=64,
                adapter_version_id=version,
            )
            for k, version in enumerate(versions)
        ]
        session.add_all(images)
        await session.flush()
        for hps, values in (scores or {}).items():
            session.add_all(
                HPSScore(image_id=image.id, hps_version_id=hps, score=value)
                for image, value in zip(images, values, strict=True)
            )
        for n, (user, index) in enumerate(picks.items()):
            session.add(
                Choice(
                    generation_id=generation.id,
                    user_id=user,
                    kind=index if isinstance(index, str) else "pick",
                    image_index=None if isinstance(index, str) else index,
                    chosen_at=at + timedelta(seconds=n + 1),
                )
            )
        return generation.id
