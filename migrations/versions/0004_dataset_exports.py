"""Finished dataset exports (for incremental exports) and an index on pick times.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_exports",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("rater", sa.String(length=20), nullable=False),
        sa.Column("out_path", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_exports")),
    )
    op.create_index(
        "ix_dataset_exports_kind", "dataset_exports", ["format", "rater", "cutoff"], unique=False
    )
    op.create_index("ix_choices_chosen_at", "choices", ["chosen_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_choices_chosen_at", table_name="choices")
    op.drop_index("ix_dataset_exports_kind", table_name="dataset_exports")
    op.drop_table("dataset_exports")
