"""The model registry: every trained HPS model and generator adapter, and which one serves.

``model_versions`` holds them; a partial unique index keeps one active version per kind.
Promoting retires the active one; rolling back re-activates the version that was active
before it. Workers read the active adapter before each job (see bot/generation/runner.py).

This module is the only one that reads or writes ``model_versions``: the worker, the
retrain loop, the reports and the front ends ask it, and get views (:class:`VersionView`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import ModelKind, ModelStatus, ModelVersion
from bot.domain import Refusal

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def model_location(kind: str, uri: str) -> str:
    """Where a model to register is, as the registry keeps it: an absolute, resolved path.

    A relative path would mean another folder to a worker started elsewhere, and a
    missing one would fail only when the model first serves: both are refused here.
    An HPS may also be a name rather than a file (a preset such as ``tiny``, or open_clip
    weights such as ``ViT-L-14:openai``), kept as given; ``ARCH:FILE`` keeps its arch.
    """
    path = Path(uri).expanduser()
    if kind == "hps" and not path.exists():
        arch, colon, spec = uri.partition(":")
        if colon and arch and not _looks_like_a_path(arch):  # ARCH:FILE or ARCH:TAG
            if not _looks_like_a_path(spec):
                return uri  # weights open_clip downloads by name
            return f"{arch}:{_existing(Path(spec).expanduser(), 'the checkpoint file')}"
        if not _looks_like_a_path(uri):
            return uri  # a preset's name
    if kind == "generator_adapter" and path.exists() and not path.is_dir():
        raise Refusal(
            f"{path.resolve()} is not a folder: an adapter is a folder holding "
            "pytorch_lora_weights.safetensors",
            code="not_a_model",
        )
    return _existing(path, "the model")


def _looks_like_a_path(text: str) -> bool:
    return "/" in text or text.startswith((".", "~")) or text.endswith(CHECKPOINT_SUFFIXES)


def _existing(path: Path, what: str) -> str:
    if not path.exists():
        raise Refusal(f"{what} {path.absolute()} does not exist", code="no_model")
    return str(path.resolve())


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
    return VersionView(
        row.id,
        row.kind.value,
        row.uri,
        row.status.value,
        dict(row.metrics or {}),
        row.created_at,
        row.promoted_at,
    )


async def active_versions(session: AsyncSession) -> list[VersionView]:
    """The active version of each kind, read in the caller's session (for its reports)."""
    rows = await session.scalars(
        select(ModelVersion).where(ModelVersion.status == ModelStatus.active)
    )
    return [_view(row) for row in rows]


async def active_version(session: AsyncSession, kind: str) -> VersionView | None:
    """The active version of ``kind``, read in the caller's session (for one that must
    see it inside its own transaction, as the people's gate opening a comparison does)."""
    row = await session.scalar(
        select(ModelVersion).where(
            ModelVersion.kind == ModelKind(kind),
            ModelVersion.status == ModelStatus.active,
        )
    )
    return _view(row) if row else None


class ModelRegistry:
    """Registers, lists, promotes and rolls back model versions; one per platform."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def register(self, kind: str, uri: str, metrics: dict[str, Any] | None = None) -> int:
        """Record a candidate (it serves only once promoted); ``uri`` as
        :func:`model_location` gives it."""
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

    async def find(self, kind: str, uri: str) -> VersionView | None:
        """The version of ``kind`` registered with ``uri`` (the first, if several), or None."""
        async with self.sessions() as session:
            row = await session.scalar(
                select(ModelVersion)
                .where(ModelVersion.kind == ModelKind(kind), ModelVersion.uri == uri)
                .order_by(ModelVersion.id)
                .limit(1)
            )
        return _view(row) if row else None

    async def active(self, kind: str) -> VersionView | None:
        async with self.sessions() as session:
            return await active_version(session, kind)

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
