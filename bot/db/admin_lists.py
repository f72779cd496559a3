"""Read-only lists for the admins' web pages: banned members, the audit log, the exports,
one retrain run. Each function takes the session first and never writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import AdminAction, DatasetExport, RetrainRun, User
from bot.domain import RetrainRunView, UserRef


@dataclass(frozen=True)
class BannedMember:
    member: str  # frontend:external_id
    reason: str | None
    first_seen: datetime


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    allowed: bool
    details: dict[str, Any]


@dataclass(frozen=True)
class ExportRow:
    id: int
    format: str
    rater: str
    out_path: str
    since: datetime | None
    cutoff: datetime
    created_at: datetime
    counts: dict[str, Any]

    @property
    def instances(self) -> int:
        return int(sum((self.counts.get("instances") or {}).values()))

    @property
    def images(self) -> int:
        return int(self.counts.get("images") or 0)


async def banned_members(session: AsyncSession) -> list[BannedMember]:
    """Every banned member, the longest known first."""
    rows = await session.execute(
        select(User.frontend, User.external_id, User.banned_reason, User.created_at)
        .where(User.banned)
        .order_by(User.id)
    )
    return [BannedMember(str(UserRef(f, e)), reason, at) for f, e, reason, at in rows.all()]


async def audit_page(
    session: AsyncSession, page: int, per_page: int = 100
) -> tuple[list[AuditEntry], int]:
    """Page ``page`` (from 1) of the audit log, newest first, and how many entries it has."""
    total = int(await session.scalar(select(func.count()).select_from(AdminAction)) or 0)
    rows = await session.scalars(
        select(AdminAction)
        .order_by(AdminAction.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    )
    return [_entry(row) for row in rows], total


async def last_action(session: AsyncSession, actor: UserRef, action: str) -> AuditEntry | None:
    """``actor``'s latest allowed ``action`` in the audit log (to tell them how it went)."""
    row = await session.scalar(
        select(AdminAction)
        .where(AdminAction.actor == str(actor), AdminAction.action == action, AdminAction.allowed)
        .order_by(AdminAction.id.desc())
        .limit(1)
    )
    return _entry(row) if row else None


def _entry(row: AdminAction) -> AuditEntry:
    return AuditEntry(
        row.id, row.at, row.actor, row.action, row.target, row.allowed, dict(row.details or {})
    )


async def exports(session: AsyncSession, limit: int = 20) -> list[ExportRow]:
    """The latest finished exports, newest first."""
    rows = await session.scalars(
        select(DatasetExport).order_by(DatasetExport.id.desc()).limit(limit)
    )
    return [_export(row) for row in rows]


async def export(session: AsyncSession, export_id: int) -> ExportRow | None:
    row = await session.get(DatasetExport, export_id)
    return _export(row) if row else None


def _export(row: DatasetExport) -> ExportRow:
    return ExportRow(
        row.id,
        row.format,
        row.rater,
        row.out_path,
        row.since,
        row.cutoff,
        row.created_at,
        dict(row.counts or {}),
    )


async def retrain_run(session: AsyncSession, run_id: int) -> RetrainRunView | None:
    row = await session.get(RetrainRun, run_id)
    return RetrainRunView.of(row) if row else None
