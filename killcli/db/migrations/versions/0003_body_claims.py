"""body claims: a killmail body being fetched by one worker, seen by every worker

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "body_claims",
        sa.Column("killmail_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("killmail_id", name=op.f("pk_body_claims")),
    )
    op.create_index(op.f("ix_body_claims_owner"), "body_claims", ["owner"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_body_claims_owner"), table_name="body_claims")
    op.drop_table("body_claims")
