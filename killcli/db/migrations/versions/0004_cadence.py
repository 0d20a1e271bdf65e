"""adaptive cadence: characters.newest_killmail_at, backfilled; index on last_sync_at

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The newest killmail_time of each character's linked killmails, once, for existing data;
# from now on `link_characters` keeps it current.
BACKFILL = sa.text("""
    UPDATE characters SET newest_killmail_at = (
        SELECT max(k.killmail_time)
        FROM character_killmails l JOIN killmails k ON k.killmail_id = l.killmail_id
        WHERE l.character_id = characters.character_id)
""")


def upgrade() -> None:
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("newest_killmail_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_characters_newest_killmail_at"), ["newest_killmail_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_characters_last_sync_at"), ["last_sync_at"], unique=False
        )
    op.execute(BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_characters_last_sync_at"))
        batch_op.drop_index(batch_op.f("ix_characters_newest_killmail_at"))
        batch_op.drop_column("newest_killmail_at")
