"""the database queue's claim index in the claim's own order

A claim asks for the ready jobs by ``priority DESC, available_at, id``; the index was
``(queue, priority, available_at)``, so every claim sorted the jobs of its priority (all
2,000 of a `queue --all`) to take a few. ``ix_jobs_ready`` is
``(queue, priority DESC, available_at, id)``: a claim reads the first rows and stops.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD = "ix_jobs_queue_priority_available_at"
NEW = "ix_jobs_ready"


def upgrade() -> None:
    op.create_index(NEW, "jobs", ["queue", sa.text("priority DESC"), "available_at", "id"])
    op.drop_index(OLD, table_name="jobs")


def downgrade() -> None:
    op.create_index(OLD, "jobs", ["queue", "priority", "available_at"])
    op.drop_index(NEW, table_name="jobs")
