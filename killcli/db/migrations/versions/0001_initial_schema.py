"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "characters",
        sa.Column("character_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("owner_hash", sa.String(length=200), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("refresh_token_enc", sa.Text(), nullable=True),
        sa.Column("access_token_enc", sa.Text(), nullable=True),
        sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("list_etag", sa.String(length=200), nullable=True),
        sa.Column("list_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("character_id", name=op.f("pk_characters")),
    )
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_characters_list_expires_at"), ["list_expires_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_characters_status"), ["status"], unique=False)

    op.create_table(
        "dead_letters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("character_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letters_job_id"), ["job_id"], unique=False)

    op.create_table(
        "esi_cache",
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("etag", sa.String(length=200), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("url", name=op.f("pk_esi_cache")),
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_created_at"), ["created_at"], unique=False)

    op.create_table(
        "jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("character_id", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("job_id", name=op.f("uq_jobs_job_id")),
        sa.UniqueConstraint("queue", "character_id", name=op.f("uq_jobs_queue_character_id")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_character_id"), ["character_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_jobs_queue_priority_available_at"),
            ["queue", "priority", "available_at"],
            unique=False,
        )

    op.create_table(
        "killmails",
        sa.Column("killmail_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("killmail_hash", sa.String(length=64), nullable=True),
        sa.Column("killmail_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("solar_system_id", sa.BigInteger(), nullable=False),
        sa.Column("moon_id", sa.BigInteger(), nullable=True),
        sa.Column("war_id", sa.BigInteger(), nullable=True),
        sa.Column("victim_character_id", sa.BigInteger(), nullable=True),
        sa.Column("victim_corporation_id", sa.BigInteger(), nullable=True),
        sa.Column("victim_alliance_id", sa.BigInteger(), nullable=True),
        sa.Column("victim_faction_id", sa.BigInteger(), nullable=True),
        sa.Column("victim_ship_type_id", sa.BigInteger(), nullable=False),
        sa.Column("victim_damage_taken", sa.BigInteger(), nullable=False),
        sa.Column(
            "position_x", sa.Float(precision=53).with_variant(sa.Float(), "sqlite"), nullable=True
        ),
        sa.Column(
            "position_y", sa.Float(precision=53).with_variant(sa.Float(), "sqlite"), nullable=True
        ),
        sa.Column(
            "position_z", sa.Float(precision=53).with_variant(sa.Float(), "sqlite"), nullable=True
        ),
        sa.Column("victim_has_items", sa.Boolean(), nullable=False),
        sa.Column("attacker_count", sa.Integer(), nullable=False),
        sa.Column("final_blow_character_id", sa.BigInteger(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("killmail_id", name=op.f("pk_killmails")),
    )
    with op.batch_alter_table("killmails", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_killmails_final_blow_character_id"),
            ["final_blow_character_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_killmails_killmail_time"), ["killmail_time"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_killmails_victim_alliance_id"), ["victim_alliance_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_killmails_victim_character_id"), ["victim_character_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_killmails_victim_corporation_id"),
            ["victim_corporation_id"],
            unique=False,
        )

    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "names",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("category", sa.String(length=40), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retry_after", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_names")),
    )
    op.create_table(
        "pending_killmails",
        sa.Column("killmail_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("killmail_hash", sa.String(length=64), nullable=False),
        sa.Column("character_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("killmail_id", name=op.f("pk_pending_killmails")),
    )
    with op.batch_alter_table("pending_killmails", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pending_killmails_character_id"), ["character_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pending_killmails_next_attempt_at"), ["next_attempt_at"], unique=False
        )

    op.create_table(
        "sync_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("character_id", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_runs_character_id"), ["character_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_sync_runs_started_at"), ["started_at"], unique=False)

    op.create_table(
        "webhooks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("url_enc", sa.Text(), nullable=False),
        sa.Column("character_id", sa.BigInteger(), nullable=True),
        sa.Column("max_age_s", sa.Integer(), nullable=False),
        sa.Column("cursor_event_id", sa.BigInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_table(
        "worker_status",
        sa.Column("worker_id", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("jobs_handled", sa.Integer(), nullable=False),
        sa.Column("esi", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_worker_status")),
    )
    with op.batch_alter_table("worker_status", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_worker_status_updated_at"), ["updated_at"], unique=False
        )

    op.create_table(
        "character_killmails",
        sa.Column("character_id", sa.BigInteger(), nullable=False),
        sa.Column("killmail_id", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["character_id"],
            ["characters.character_id"],
            name=op.f("fk_character_killmails_character_id_characters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("character_id", "killmail_id", name=op.f("pk_character_killmails")),
    )
    with op.batch_alter_table("character_killmails", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_character_killmails_killmail_id"), ["killmail_id"], unique=False
        )

    op.create_table(
        "killmail_attackers",
        sa.Column("killmail_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("character_id", sa.BigInteger(), nullable=True),
        sa.Column("corporation_id", sa.BigInteger(), nullable=True),
        sa.Column("alliance_id", sa.BigInteger(), nullable=True),
        sa.Column("faction_id", sa.BigInteger(), nullable=True),
        sa.Column("damage_done", sa.BigInteger(), nullable=False),
        sa.Column("final_blow", sa.Boolean(), nullable=False),
        sa.Column(
            "security_status",
            sa.Float(precision=53).with_variant(sa.Float(), "sqlite"),
            nullable=False,
        ),
        sa.Column("ship_type_id", sa.BigInteger(), nullable=True),
        sa.Column("weapon_type_id", sa.BigInteger(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["killmail_id"],
            ["killmails.killmail_id"],
            name=op.f("fk_killmail_attackers_killmail_id_killmails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("killmail_id", "position", name=op.f("pk_killmail_attackers")),
    )
    with op.batch_alter_table("killmail_attackers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_killmail_attackers_character_id_killmail_id"),
            ["character_id", "killmail_id"],
            unique=False,
        )

    op.create_table(
        "killmail_items",
        sa.Column("killmail_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("parent_position", sa.Integer(), nullable=True),
        sa.Column("item_type_id", sa.BigInteger(), nullable=False),
        sa.Column("flag", sa.BigInteger(), nullable=False),
        sa.Column("singleton", sa.BigInteger(), nullable=False),
        sa.Column("quantity_destroyed", sa.BigInteger(), nullable=True),
        sa.Column("quantity_dropped", sa.BigInteger(), nullable=True),
        sa.Column("has_children", sa.Boolean(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["killmail_id", "parent_position"],
            ["killmail_items.killmail_id", "killmail_items.position"],
            name=op.f("fk_killmail_items_killmail_id_killmail_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["killmail_id"],
            ["killmails.killmail_id"],
            name=op.f("fk_killmail_items_killmail_id_killmails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("killmail_id", "position", name=op.f("pk_killmail_items")),
    )


def downgrade() -> None:
    op.drop_table("killmail_items")
    with op.batch_alter_table("killmail_attackers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_killmail_attackers_character_id_killmail_id"))

    op.drop_table("killmail_attackers")
    with op.batch_alter_table("character_killmails", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_character_killmails_killmail_id"))

    op.drop_table("character_killmails")
    with op.batch_alter_table("worker_status", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_status_updated_at"))

    op.drop_table("worker_status")
    op.drop_table("webhooks")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_runs_started_at"))
        batch_op.drop_index(batch_op.f("ix_sync_runs_character_id"))

    op.drop_table("sync_runs")
    with op.batch_alter_table("pending_killmails", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_killmails_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_pending_killmails_character_id"))

    op.drop_table("pending_killmails")
    op.drop_table("names")
    op.drop_table("leases")
    with op.batch_alter_table("killmails", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_killmails_victim_corporation_id"))
        batch_op.drop_index(batch_op.f("ix_killmails_victim_character_id"))
        batch_op.drop_index(batch_op.f("ix_killmails_victim_alliance_id"))
        batch_op.drop_index(batch_op.f("ix_killmails_killmail_time"))
        batch_op.drop_index(batch_op.f("ix_killmails_final_blow_character_id"))

    op.drop_table("killmails")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_queue_priority_available_at"))
        batch_op.drop_index(batch_op.f("ix_jobs_character_id"))

    op.drop_table("jobs")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_created_at"))

    op.drop_table("events")
    op.drop_table("esi_cache")
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_job_id"))

    op.drop_table("dead_letters")
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_characters_status"))
        batch_op.drop_index(batch_op.f("ix_characters_list_expires_at"))

    op.drop_table("characters")
