"""The arena: comparisons between generator versions, each image's version, HPS scores.

- ``comparisons``: an admin's (or a retrain run's) comparison of a contender against the
  version that served when it started; at most one is open at a time.
- ``generations.comparison_id``: a mixed set, whose images come from both versions.
- ``images.adapter_version_id`` / ``images.generator_version``: what made each image
  (backfilled from its generation; NULL adapter = the bare base model).
- ``hps_scores``: an HPS version's score of an image, for the live agreement figure.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "comparisons",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("baseline_version_id", sa.BigInteger(), nullable=True),
        sa.Column("contender_version_id", sa.BigInteger(), nullable=True),
        sa.Column("retrain_run_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="open", nullable=False),
        sa.Column("share", sa.Float(), nullable=True),
        sa.Column("started_by", sa.Text(), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "decision",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "baseline_version_id IS DISTINCT FROM contender_version_id",
            name=op.f("ck_comparisons_two_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["baseline_version_id"],
            ["model_versions.id"],
            name=op.f("fk_comparisons_baseline_version_id_model_versions"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["contender_version_id"],
            ["model_versions.id"],
            name=op.f("fk_comparisons_contender_version_id_model_versions"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["retrain_run_id"],
            ["retrain_runs.id"],
            name=op.f("fk_comparisons_retrain_run_id_retrain_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comparisons")),
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_comparisons_one_open ON comparisons ((true)) WHERE status = 'open'"
    )
    op.add_column("generations", sa.Column("comparison_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_generations_comparison_id_comparisons"),
        "generations",
        "comparisons",
        ["comparison_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.create_index(
        "ix_generations_comparison",
        "generations",
        ["comparison_id"],
        postgresql_where=sa.text("comparison_id IS NOT NULL"),
    )
    op.add_column("images", sa.Column("adapter_version_id", sa.BigInteger(), nullable=True))
    op.add_column("images", sa.Column("generator_version", sa.Text(), nullable=True))
    op.create_foreign_key(
        op.f("fk_images_adapter_version_id_model_versions"),
        "images",
        "model_versions",
        ["adapter_version_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.execute(
        "UPDATE images i SET adapter_version_id = g.adapter_version_id, "
        "generator_version = g.generator_version FROM generations g WHERE g.id = i.generation_id"
    )
    op.create_table(
        "hps_scores",
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("hps_version_id", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_hps_scores_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["hps_version_id"],
            ["model_versions.id"],
            name=op.f("fk_hps_scores_hps_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "hps_version_id", name=op.f("pk_hps_scores")),
    )
    op.create_index("ix_hps_scores_version", "hps_scores", ["hps_version_id"])


def downgrade() -> None:
    op.drop_index("ix_hps_scores_version", table_name="hps_scores")
    op.drop_table("hps_scores")
    op.drop_constraint(
        op.f("fk_images_adapter_version_id_model_versions"), "images", type_="foreignkey"
    )
    op.drop_column("images", "generator_version")
    op.drop_column("images", "adapter_version_id")
    op.drop_index("ix_generations_comparison", table_name="generations")
    op.drop_constraint(
        op.f("fk_generations_comparison_id_comparisons"), "generations", type_="foreignkey"
    )
    op.drop_column("generations", "comparison_id")
    op.drop_index("uq_comparisons_one_open", table_name="comparisons")
    op.drop_table("comparisons")
