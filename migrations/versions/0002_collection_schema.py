"""The collection schema: users, generations, images, picks and model versions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 06:32:54.112554
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

ENUMS = ("generation_status", "frontend", "model_status", "model_kind")
revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Enum("hps", "generator_adapter", name="model_kind"), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column(
            "metrics",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum("candidate", "active", "retired", name="model_status"),
            server_default="candidate",
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    op.create_index(
        "uq_model_versions_one_active",
        "model_versions",
        ["kind"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("frontend", sa.Enum("discord", "cli", "web", name="frontend"), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        sa.Column("banned", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("banned_reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("frontend", "external_id", name="uq_users_frontend_id"),
    )
    op.create_table(
        "generations",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), server_default="", nullable=False),
        sa.Column("n_images", sa.SmallInteger(), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("generator_version", sa.Text(), nullable=True),
        sa.Column("adapter_version_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "status",
            sa.Enum("queued", "running", "done", "failed", name="generation_status"),
            server_default="queued",
            nullable=False,
        ),
        sa.Column("requested_by", sa.BigInteger(), nullable=False),
        sa.Column(
            "requested_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("n_images BETWEEN 2 AND 4", name=op.f("ck_generations_n_images")),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["model_versions.id"],
            name=op.f("fk_generations_adapter_version_id_model_versions"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["users.id"],
            name=op.f("fk_generations_requested_by_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generations")),
    )
    op.create_index(
        "ix_generations_undelivered",
        "generations",
        ["finished_at"],
        unique=False,
        postgresql_where=sa.text("delivered_at IS NULL AND status IN ('done', 'failed')"),
    )
    op.create_index(
        "ix_generations_user_status", "generations", ["requested_by", "status"], unique=False
    )
    op.create_table(
        "choice_history",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("generation_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("image_index", sa.SmallInteger(), nullable=False),
        sa.Column(
            "chosen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["generations.id"],
            name=op.f("fk_choice_history_generation_id_generations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_choice_history_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_choice_history")),
    )
    op.create_index(
        "ix_choice_history_generation_user",
        "choice_history",
        ["generation_id", "user_id"],
        unique=False,
    )
    op.create_table(
        "images",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("generation_id", sa.BigInteger(), nullable=False),
        sa.Column("index", sa.SmallInteger(), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.SmallInteger(), nullable=False),
        sa.Column("height", sa.SmallInteger(), nullable=False),
        sa.Column("nsfw", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.CheckConstraint('"index" BETWEEN 0 AND 3', name=op.f("ck_images_index")),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["generations.id"],
            name=op.f("fk_images_generation_id_generations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("generation_id", "index", name="uq_images_generation_index"),
    )
    op.create_table(
        "choices",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("generation_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("image_index", sa.SmallInteger(), nullable=False),
        sa.Column(
            "chosen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["generation_id", "image_index"],
            ["images.generation_id", "images.index"],
            name="fk_choices_image",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["generations.id"],
            name=op.f("fk_choices_generation_id_generations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_choices_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_choices")),
        sa.UniqueConstraint("generation_id", "user_id", name="uq_choices_generation_user"),
    )
    op.create_index("ix_choices_user", "choices", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_choices_user", table_name="choices")
    op.drop_table("choices")
    op.drop_table("images")
    op.drop_index("ix_choice_history_generation_user", table_name="choice_history")
    op.drop_table("choice_history")
    op.drop_index("ix_generations_user_status", table_name="generations")
    op.drop_index(
        "ix_generations_undelivered",
        table_name="generations",
        postgresql_where=sa.text("delivered_at IS NULL AND status IN ('done', 'failed')"),
    )
    op.drop_table("generations")
    op.drop_table("users")
    op.drop_index(
        "uq_model_versions_one_active",
        table_name="model_versions",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_table("model_versions")
    for name in ENUMS:
        op.execute(f"DROP TYPE {name}")
