"""corporation jobs: the database queue holds jobs of corporations' lists too

A row of ``jobs`` names a character or, the character null, a corporation; each has its
own one-job-per-queue constraint.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("corporation_id", sa.BigInteger(), nullable=True))
        batch_op.alter_column("character_id", existing_type=sa.BigInteger(), nullable=True)
        batch_op.create_unique_constraint(
            batch_op.f("uq_jobs_queue_corporation_id"), ["queue", "corporation_id"]
        )


def downgrade() -> None:
    # A corporation's job has no character to fall back to: it goes (the next
    # `killsync queue` of a release with corporation jobs queues it again).
    jobs = sa.table("jobs", sa.column("character_id"))
    op.execute(jobs.delete().where(jobs.c.character_id.is_(None)))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_jobs_queue_corporation_id"), type_="unique")
        batch_op.alter_column("character_id", existing_type=sa.BigInteger(), nullable=False)
        batch_op.drop_column("corporation_id")
