"""body wants: bodies a sync will fetch later, which workers of another egress may fetch

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "body_wants",
        sa.Column("killmail_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("killmail_hash", sa.String(length=64), nullable=False),
        sa.Column("character_id", sa.BigInteger(), nullable=True),
        sa.Column("corporation_id", sa.BigInteger(), nullable=True),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("egress", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("killmail_id", name=op.f("pk_body_wants")),
    )
    op.create_index(op.f("ix_body_wants_owner"), "body_wants", ["owner"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_body_wants_owner"), table_name="body_wants")
    op.drop_table("body_wants")
