"""egress budget: the ledger of ESI's per-IP budgets shared by the workers of one egress

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DOUBLE = sa.Float(precision=53).with_variant(sa.Float(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "egress_budgets",
        sa.Column("egress", sa.String(length=100), nullable=False),
        sa.Column("budget", sa.String(length=100), nullable=False),
        sa.Column("limit_tokens", sa.Integer(), nullable=True),
        sa.Column("window_s", DOUBLE, nullable=True),
        sa.Column("blocked_until", DOUBLE, nullable=False),
        sa.Column("updated_at", DOUBLE, nullable=False),
        sa.PrimaryKeyConstraint("egress", "budget", name=op.f("pk_egress_budgets")),
    )
    op.create_table(
        "egress_blocks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("egress", sa.String(length=100), nullable=False),
        sa.Column("budget", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("taken_at", DOUBLE, nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("expires_at", DOUBLE, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_egress_blocks")),
    )
    op.create_index(
        "ix_egress_blocks_egress_budget_expires_at",
        "egress_blocks",
        ["egress", "budget", "expires_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_egress_blocks_egress_budget_expires_at", table_name="egress_blocks")
    op.drop_table("egress_blocks")
    op.drop_table("egress_budgets")
