"""An index on ``images.storage_key``: the web page serves an image only when a row shown
to members has its key (one lookup per image request), and the store's sweep and a
forgotten member's clean-up ask which keys rows still reference.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_images_storage_key"), "images", ["storage_key"])


def downgrade() -> None:
    op.drop_index(op.f("ix_images_storage_key"), table_name="images")
