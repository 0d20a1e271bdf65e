"""market history clustered by day: primary key (region, date, type), day counts per type

A daily archive writes one row per type of one day: with the key (region, type, date)
those rows land all over the table (each file rewrote thousands of pages); keyed by
(region, date, type) they append. Readers that went by type (how many days a type has
stored, and its first) read ``market_history_types`` instead, kept by the writers
(``killcli.prices.store``); ``market_history_pending`` holds the days a bulk import
added whose rows are not counted there yet.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BIG = sa.BigInteger
DOUBLE = sa.Float(precision=53).with_variant(sa.Float(), "sqlite")
VALUES = ("average", "highest", "lowest", "volume", "order_count")


def _history(name: str, key: tuple[str, ...], *, rowid: bool) -> sa.Table:
    return op.create_table(
        name,
        sa.Column("region_id", BIG(), autoincrement=False, nullable=False),
        sa.Column("type_id", BIG(), autoincrement=False, nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("average", DOUBLE, nullable=False),
        sa.Column("highest", DOUBLE, nullable=False),
        sa.Column("lowest", DOUBLE, nullable=False),
        sa.Column("volume", BIG(), nullable=False),
        sa.Column("order_count", BIG(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name="pk_market_history"),
        sqlite_with_rowid=rowid,
    )


def _rekey(key: tuple[str, ...], *, rowid: bool) -> None:
    """The history under a new primary key (SQLite: a new table, rows copied over)."""
    if op.get_bind().dialect.name == "sqlite":
        _history("market_history_new", key, rowid=rowid)
        columns = ", ".join(("region_id", "type_id", "date", *VALUES))
        op.execute(
            f"INSERT INTO market_history_new ({columns}) "  # noqa: S608 - constant names
            f"SELECT {columns} FROM market_history ORDER BY {', '.join(key)}"
        )
        op.drop_table("market_history")
        op.rename_table("market_history_new", "market_history")
        return
    op.drop_constraint("pk_market_history", "market_history", type_="primary")
    op.create_primary_key("pk_market_history", "market_history", list(key))


def upgrade() -> None:
    _rekey(("region_id", "date", "type_id"), rowid=False)
    op.create_table(
        "market_history_types",
        sa.Column("region_id", BIG(), autoincrement=False, nullable=False),
        sa.Column("type_id", BIG(), autoincrement=False, nullable=False),
        sa.Column("days", BIG(), nullable=False),
        sa.Column("first_date", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("region_id", "type_id", name=op.f("pk_market_history_types")),
    )
    op.create_table(
        "market_history_pending",
        sa.Column("region_id", BIG(), autoincrement=False, nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("region_id", "date", name=op.f("pk_market_history_pending")),
    )
    op.execute(
        "INSERT INTO market_history_types (region_id, type_id, days, first_date) "
        "SELECT region_id, type_id, count(*), min(date) FROM market_history "
        "GROUP BY region_id, type_id"
    )


def downgrade() -> None:
    op.drop_table("market_history_pending")
    op.drop_table("market_history_types")
    _rekey(("region_id", "type_id", "date"), rowid=True)
