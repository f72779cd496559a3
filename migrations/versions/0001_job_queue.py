"""The job queue's schema (procrastinate 3.10), owned by our migrations.

procrastinate's tables, types and functions all start with ``procrastinate_``; the
downgrade drops exactly those. A later procrastinate minor release ships SQL migrations
of its own: apply them in a new revision of ours (pyproject pins the minor version).

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    from procrastinate.schema import SchemaManager

    # Multi-statement SQL must reach psycopg with no parameters at all (its simple
    # protocol); SQLAlchemy's execute would pass an empty set and split nothing.
    cursor = op.get_bind().connection.dbapi_connection.cursor()
    cursor.execute(SchemaManager.get_schema())


_OBJECTS = {
    "FUNCTION": "SELECT p.oid::regprocedure::text FROM pg_proc p "
    "JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'",
    # Standalone enum and composite types; the tables' row types go with the tables.
    "TYPE": "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
    "WHERE n.nspname = current_schema() AND t.typtype IN ('e', 'c') "
    "AND t.typname LIKE 'procrastinate\\_%'",
}


def downgrade() -> None:
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "DROP TABLE IF EXISTS procrastinate_jobs, procrastinate_events, "
            "procrastinate_periodic_defers, procrastinate_workers CASCADE"
        )
    )
    for kind, query in _OBJECTS.items():
        for name in bind.execute(sa.text(query)).scalars().all():
            bind.execute(sa.text(f"DROP {kind} IF EXISTS {name} CASCADE"))
