"""looking at killmails: an index for `kills`, webhook filters and delay

``killmails`` gets an index on ``(killmail_time, killmail_id)`` (newest first, ties by id);
``webhooks`` get ``corporation_id`` (kills and losses of a tracked corporation),
``delay_s`` (opsec: post a kill only once it is that old) and ``filters`` (JSON).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEX = "ix_killmails_killmail_time_killmail_id"


def upgrade() -> None:
    op.create_index(INDEX, "killmails", ["killmail_time", "killmail_id"], unique=False)
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("corporation_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("delay_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("filters", sa.JSON(), nullable=True))
    webhooks = sa.table("webhooks", sa.column("delay_s", sa.Integer()))
    op.execute(webhooks.update().values(delay_s=0))
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.alter_column("delay_s", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("filters")
        batch_op.drop_column("delay_s")
        batch_op.drop_column("corporation_id")
    op.drop_index(INDEX, table_name="killmails")
