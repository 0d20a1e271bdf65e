"""prices and values: market history, the universe cache, the value of every killmail

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BIG = sa.BigInteger
WHEN = sa.DateTime(timezone=True)
DOUBLE = sa.Float(precision=53).with_variant(sa.Float(), "sqlite")
ISK = sa.Numeric(20, 2)


def _pair(first: str, second: str) -> list[sa.Column[int]]:
    return [
        sa.Column(first, BIG(), autoincrement=False, nullable=False),
        sa.Column(second, BIG(), autoincrement=False, nullable=False),
    ]


def _cache(table: str, key: str, *columns: sa.Column[object]) -> None:
    """A cached ESI lookup: its id, its columns, when fetched, when to ask again."""
    op.create_table(
        table,
        sa.Column(key, BIG(), autoincrement=False, nullable=False),
        *columns,
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("fetched_at", WHEN, nullable=False),
        sa.Column("retry_after", WHEN, nullable=True),
        sa.PrimaryKeyConstraint(key, name=op.f(f"pk_{table}")),
    )


def _index(table: str, column: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def upgrade() -> None:
    op.create_table(
        "market_history",
        *_pair("region_id", "type_id"),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("average", DOUBLE, nullable=False),
        sa.Column("highest", DOUBLE, nullable=False),
        sa.Column("lowest", DOUBLE, nullable=False),
        sa.Column("volume", BIG(), nullable=False),
        sa.Column("order_count", BIG(), nullable=False),
        sa.PrimaryKeyConstraint("region_id", "type_id", "date", name=op.f("pk_market_history")),
    )
    op.create_table(
        "price_imports",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("rows", BIG(), nullable=False),
        sa.Column("imported_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_price_imports")),
    )
    op.create_table(
        "price_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("region_id", BIG(), nullable=False),
        sa.Column("type_id", BIG(), nullable=True),
        sa.Column("first_date", sa.Date(), nullable=False),
        sa.Column("changed_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_changes")),
    )
    _index("price_changes", "changed_at")
    op.create_table(
        "price_fetches",
        *_pair("region_id", "type_id"),
        sa.Column("fetched_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("region_id", "type_id", name=op.f("pk_price_fetches")),
    )
    _index("price_fetches", "expires_at")
    op.create_table(
        "market_prices",
        sa.Column("type_id", BIG(), autoincrement=False, nullable=False),
        sa.Column("average_price", DOUBLE, nullable=True),
        sa.Column("adjusted_price", DOUBLE, nullable=True),
        sa.Column("fetched_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("type_id", name=op.f("pk_market_prices")),
    )
    _cache("universe_types", "type_id", sa.Column("group_id", BIG(), nullable=True))
    _cache("universe_groups", "group_id", sa.Column("category_id", BIG(), nullable=True))
    _cache(
        "universe_systems",
        "system_id",
        sa.Column("constellation_id", BIG(), nullable=True),
        sa.Column("security_status", DOUBLE, nullable=True),
    )
    _cache(
        "universe_constellations",
        "constellation_id",
        sa.Column("region_id", BIG(), nullable=True),
    )
    op.create_table(
        "killmail_values",
        sa.Column("killmail_id", BIG(), autoincrement=False, nullable=False),
        sa.Column("total", ISK, nullable=False),
        sa.Column("destroyed", ISK, nullable=False),
        sa.Column("dropped", ISK, nullable=False),
        sa.Column("fitted", ISK, nullable=False),
        sa.Column("ship", ISK, nullable=False),
        sa.Column("price_date", sa.Date(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("unpriced_type_ids", sa.JSON(), nullable=False),
        sa.Column("computed_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["killmail_id"],
            ["killmails.killmail_id"],
            name=op.f("fk_killmail_values_killmail_id_killmails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("killmail_id", name=op.f("pk_killmail_values")),
    )
    _index("killmail_values", "price_date")


TABLES = (
    "killmail_values",
    "universe_constellations",
    "universe_systems",
    "universe_groups",
    "universe_types",
    "market_prices",
    "price_fetches",
    "price_changes",
    "price_imports",
    "market_history",
)


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
