"""corporation sync: pending bodies and sync runs of a corporation's list

``pending_killmails`` and ``sync_runs`` name the character whose list it was, or (the
character null) the corporation whose list it was.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("pending_killmails", "sync_runs")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("corporation_id", sa.BigInteger(), nullable=True))
            batch_op.alter_column("character_id", existing_type=sa.BigInteger(), nullable=True)
            batch_op.create_index(
                batch_op.f(f"ix_{table}_corporation_id"), ["corporation_id"], unique=False
            )


def downgrade() -> None:
    for table in TABLES:
        # A corporation's rows have no character to fall back to: they go.
        rows = sa.table(table, sa.column("character_id"))
        op.execute(rows.delete().where(rows.c.character_id.is_(None)))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_corporation_id"))
            batch_op.alter_column("character_id", existing_type=sa.BigInteger(), nullable=False)
            batch_op.drop_column("corporation_id")
