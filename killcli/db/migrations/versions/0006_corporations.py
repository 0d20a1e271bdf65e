"""corporations: tracked corporations, their killmails, and their directors' state

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corporations",
        sa.Column("corporation_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("list_etag", sa.String(length=200), nullable=True),
        sa.Column("list_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("newest_killmail_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("corporation_id", name=op.f("pk_corporations")),
    )
    with op.batch_alter_table("corporations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_corporations_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_corporations_list_expires_at"), ["list_expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_corporations_last_sync_at"), ["last_sync_at"], unique=False
        )
    op.create_table(
        "corporation_killmails",
        sa.Column("corporation_id", sa.BigInteger(), nullable=False),
        sa.Column("killmail_id", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["corporation_id"],
            ["corporations.corporation_id"],
            name=op.f("fk_corporation_killmails_corporation_id_corporations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "corporation_id", "killmail_id", name=op.f("pk_corporation_killmails")
        ),
    )
    with op.batch_alter_table("corporation_killmails", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_corporation_killmails_killmail_id"), ["killmail_id"], unique=False
        )
    op.create_table(
        "corporation_directors",
        sa.Column("character_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("corporation_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("roles_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("roles_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["character_id"],
            ["characters.character_id"],
            name=op.f("fk_corporation_directors_character_id_characters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("character_id", name=op.f("pk_corporation_directors")),
    )
    with op.batch_alter_table("corporation_directors", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_corporation_directors_corporation_id"), ["corporation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_corporation_directors_roles_expires_at"),
            ["roles_expires_at"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_table("corporation_directors")
    op.drop_table("corporation_killmails")
    op.drop_table("corporations")
