"""Better votes: ties and "none are good" beside picks, and control sets.

- ``choices.kind`` / ``choice_history.kind``: ``pick`` (``image_index`` says which image),
  ``tie`` ("No favourite": the images are equally good) or ``none`` ("None are good");
  ``image_index`` is NULL exactly when the vote is not a pick. Existing rows are picks.
- ``generations.control_kind``: set for a control set, a set with a known answer:
  ``blur`` / ``noise`` / ``invert`` / ``wrong_prompt`` (the worker corrupted image
  ``control_worse`` on purpose) or ``marked`` (an admin, ``control_by``, marked a known
  worse and/or best image). NULL for every ordinary set.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VOTE_TABLES = ("choices", "choice_history")


def upgrade() -> None:
    for table in VOTE_TABLES:
        op.add_column(
            table, sa.Column("kind", sa.String(length=8), server_default="pick", nullable=False)
        )
        op.alter_column(table, "image_index", existing_type=sa.SmallInteger(), nullable=True)
        op.create_check_constraint(
            op.f(f"ck_{table}_vote_kind"), table, "kind IN ('pick', 'tie', 'none')"
        )
        op.create_check_constraint(
            op.f(f"ck_{table}_pick_has_index"),
            table,
            "(kind = 'pick') = (image_index IS NOT NULL)",
        )
    op.add_column("generations", sa.Column("control_kind", sa.String(length=16), nullable=True))
    op.add_column("generations", sa.Column("control_worse", sa.SmallInteger(), nullable=True))
    op.add_column("generations", sa.Column("control_best", sa.SmallInteger(), nullable=True))
    op.add_column("generations", sa.Column("control_by", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_generations_control_kind"),
        "generations",
        "control_kind IN ('blur', 'noise', 'invert', 'wrong_prompt', 'marked')",
    )
    op.create_check_constraint(
        op.f("ck_generations_control_answer"),
        "generations",
        "(control_kind IS NULL AND control_worse IS NULL AND control_best IS NULL) OR "
        "(control_kind IS NOT NULL AND (control_worse IS NOT NULL OR control_best IS NOT NULL) "
        "AND control_worse IS DISTINCT FROM control_best "
        "AND (control_kind = 'marked' OR control_worse IS NOT NULL))",
    )
    op.create_index(
        "ix_generations_control",
        "generations",
        ["id"],
        postgresql_where=sa.text("control_kind IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_generations_control", table_name="generations")
    op.drop_constraint(op.f("ck_generations_control_answer"), "generations", type_="check")
    op.drop_constraint(op.f("ck_generations_control_kind"), "generations", type_="check")
    for column in ("control_by", "control_best", "control_worse", "control_kind"):
        op.drop_column("generations", column)
    for table in VOTE_TABLES:
        # Ties and "none" votes have no image: a schema without kinds cannot hold them.
        op.execute(f"DELETE FROM {table} WHERE kind <> 'pick'")
        op.drop_constraint(op.f(f"ck_{table}_pick_has_index"), table, type_="check")
        op.drop_constraint(op.f(f"ck_{table}_vote_kind"), table, type_="check")
        op.alter_column(table, "image_index", existing_type=sa.SmallInteger(), nullable=False)
        op.drop_column(table, "kind")
