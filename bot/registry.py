"""The model registry: every trained HPS model and generator adapter, and which one serves.

``model_versions`` holds them; a partial unique index keeps one active version per kind.
Promoting retires the active one; rolling back re-activates the version that was active
before it. Workers read the active adapter before each job (see bot/generation.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import ModelKind, ModelStatus, ModelVersion
from bot.domain import Refusal


@dataclass(frozen=True)
class VersionView:
    id: int
    kind: str
    uri: str
    status: str
    metrics: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None


def _view(row: ModelVersion) -> VersionView:
    return VersionView(row.id, row.kind.value, row.uri, row.status.value, dict(row.metrics or {}),
                       row.created_at, row.promoted_at)  # fmt: skip


class ModelRegistry:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def register(self, kind: str, uri: str, metrics: dict[str, Any] | None = None) -> int:
        """Record a candidate (it serves only once promoted)."""
        async with self.sessions.begin() as session:
            row = ModelVersion(kind=ModelKind(kind), uri=uri, metrics=metrics or {})
            session.add(row)
            await session.flush()
            return row.id

    async def versions(self, kind: str | None = None) -> list[VersionView]:
        async with self.sessions() as session:
            query = select(ModelVersion).order_by(ModelVersion.id.desc())
            if kind:
                query = query.where(ModelVersion.kind == ModelKind(kind))
            return [_view(row) for row in await session.scalars(query)]

    async def get(self, version_id: int) -> VersionView:
        async with self.sessions() as session:
            row = await session.get(ModelVersion, version_id)
        if row is None:
            raise Refusal(f"There is no model version {version_id}.", code="no_version")
        return _view(row)

    async def active(self, kind: str) -> VersionView | None:
        async with self.sessions() as session:
            row = await session.scalar(
                select(ModelVersion).where(
                    ModelVersion.kind == ModelKind(kind),
                    ModelVersion.status == ModelStatus.active,
                )
            )
        return _view(row) if row else None

    async def promote(self, version_id: int) -> VersionView:
        """Make ``version_id`` the active one of its kind (the previous one retires)."""
        async with self.sessions.begin() as session:
            row = await session.get(ModelVersion, version_id, with_for_update=True)
            if row is None:
                raise Refusal(f"There is no model version {version_id}.", code="no_version")
            await session.execute(
                update(ModelVersion)
                .where(ModelVersion.kind == row.kind, ModelVersion.status == ModelStatus.active)
                .values(status=ModelStatus.retired)
            )
            row.status = ModelStatus.active
            row.promoted_at = func.now()
            await session.flush()
            await session.refresh(row)
            return _view(row)

    async def rollback(self, kind: str) -> VersionView | None:
        """Retire the active version; re-activate the one promoted before it (or none)."""
        async with self.sessions.begin() as session:
            current = await session.scalar(
                select(ModelVersion)
                .where(
                    ModelVersion.kind == ModelKind(kind), ModelVersion.status == ModelStatus.active
                )
                .with_for_update()
            )
            if current is None:
                raise Refusal(f"No {kind} version is active: nothing to roll back.", code="none")
            current.status = ModelStatus.retired
            await session.flush()
            previous = await session.scalar(
                select(ModelVersion)
                .where(
                    ModelVersion.kind == ModelKind(kind),
                    ModelVersion.status == ModelStatus.retired,
                    ModelVersion.promoted_at.is_not(None),
                    ModelVersion.id != current.id,
                    ModelVersion.promoted_at < current.promoted_at,
                )
                .order_by(ModelVersion.promoted_at.desc())
                .limit(1)
            )
            if previous is None:
                return None
            previous.status = ModelStatus.active
            await session.flush()
            return _view(previous)
