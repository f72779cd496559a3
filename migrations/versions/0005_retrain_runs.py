"""Retrain runs: each run of the retrain loop, its stage, and what it decided.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retrain_runs",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="queued", nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=True),
        sa.Column("progress", sa.Text(), nullable=True),
        sa.Column("picks_at_start", sa.BigInteger(), nullable=True),
        sa.Column(
            "outcome", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retrain_runs")),
    )
    # At most one unfinished run: the database, not a race between two requests, decides.
    op.execute(
        "CREATE UNIQUE INDEX uq_retrain_runs_unfinished ON retrain_runs ((true)) "
        "WHERE status IN ('queued', 'running')"
    )
    op.create_index("ix_retrain_runs_created_at", "retrain_runs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_retrain_runs_created_at", table_name="retrain_runs")
    op.drop_index("uq_retrain_runs_unfinished", table_name="retrain_runs")
    op.drop_table("retrain_runs")
