"""The migrations build exactly the models' schema, on SQLite and PostgreSQL.

An empty database (on PostgreSQL, an empty schema of the session's database) is upgraded to head with alembic (as `killsync db upgrade` does), then
alembic's autogenerate compares what is there with ``Base.metadata``: tables, columns,
types, nullability, server defaults, indexes, unique and foreign-key constraints. Any
difference is a migration that does not match its model (or a model change without one).
"""

from __future__ import annotations

from pathlib import Path
from pprint import pformat
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.sql import operators

from killcli.db import Database
from killcli.db.engine import SCHEMA_HEAD
from killcli.db.models import Base

COMPARE = {"compare_type": True, "compare_server_default": True}


def schema_differences(url: str) -> list[Any]:
    """Upgrade the empty database at ``url`` to head; what still differs from the models."""
    database = Database(url)
    try:
        before, after = database.upgrade()
        assert before is None and after == database.head_revision()
        return differences(database)
    finally:
        database.close()


def differences(database: Database) -> list[Any]:
    """What alembic's autogenerate finds between the database and the models.

    SQLAlchemy does not reflect an SQLite index column's ``DESC``, so such an index always
    looks changed; those are compared here through SQLite's own ``index_xinfo``."""
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=COMPARE)
        diffs = list(compare_metadata(context, Base.metadata))
        if database.dialect != "sqlite":
            return diffs
        descending = {
            index.name: [_column_sorting(c) for c in index.expressions]
            for table in Base.metadata.tables.values()
            for index in table.indexes
            if any(_column_sorting(c)[1] for c in index.expressions)
        }
        for name, wanted in descending.items():
            built = [
                (row[2], bool(row[3]))
                for row in conn.exec_driver_sql(f"PRAGMA index_xinfo('{name}')")
                if row[5]
            ]  # key columns only (not the rowid)
            assert built == wanted, f"{name}: {built} != {wanted}"
        return [
            d
            for d in diffs
            if not (d[0] in {"add_index", "remove_index"} and d[1].name in descending)
        ]


def _column_sorting(expression: Any) -> tuple[str, bool]:
    """(column name, descending) of one index expression of the models."""
    descending = getattr(expression, "modifier", None) is operators.desc_op
    column = expression.element if descending else expression
    return str(getattr(column, "name", None) or column.element), descending


def test_schema_head_names_the_newest_migration(tmp_path: Path) -> None:
    """`ensure_schema` trusts SCHEMA_HEAD without loading alembic: it must be the head."""
    database = Database(f"sqlite:///{tmp_path / 'head.db'}")
    try:
        assert database.head_revision() == SCHEMA_HEAD
    finally:
        database.close()


def test_migrations_build_the_models_schema_on_sqlite(tmp_path: Path) -> None:
    diffs = schema_differences(f"sqlite:///{tmp_path / 'migrated.db'}")
    assert diffs == [], pformat(diffs)


@pytest.mark.postgres
def test_migrations_build_the_models_schema_on_postgresql(empty_pg_url: str) -> None:
    diffs = schema_differences(empty_pg_url)
    assert diffs == [], pformat(diffs)


CORPORATION_TABLES = {"corporations", "corporation_killmails", "corporation_directors"}
PRICE_TABLES = {
    "market_history",
    "price_imports",
    "price_changes",
    "price_fetches",
    "market_prices",
    "universe_types",
    "universe_groups",
    "universe_systems",
    "universe_constellations",
    "killmail_values",
}


HISTORY_TABLES = {"market_history_types", "market_history_pending"}
PRICE_TABLES |= HISTORY_TABLES


def down_and_up_again(url: str, revision: str, back: set[str], gone: set[str]) -> list[Any]:
    """Head, down to ``revision`` (where the tables ``back`` exist again and ``gone`` do
    not) and up again; what then differs from the models."""
    database = Database(url)
    try:
        database.upgrade()
        cfg = database._alembic_config()  # the test drives alembic itself
        with database.engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
            conn.commit()
            tables = set(inspect(conn).get_table_names())
            assert back <= tables and not gone & tables
        assert database.current_revision() == revision
        database.upgrade()
        with database.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert gone <= tables and not back & tables
        return differences(database)
    finally:
        database.close()


# 0005 dropped the unused ``esi_cache`` (its downgrade recreates it); 0006 added the
# corporation tables (its downgrade drops them); 0008 the price and value tables.
DOWNGRADES = [
    ("0004", {"esi_cache"}, CORPORATION_TABLES),
    ("0005", set(), CORPORATION_TABLES),
    ("0006", set(), set()),  # 0007: pending bodies and runs of corporations' lists
    ("0007", set(), set()),  # 0008: jobs of corporations' lists
    ("0008", set(), set()),  # 0009: the `kills` index, webhook filters and delay
    ("0009", set(), PRICE_TABLES),  # 0010: prices, the universe cache, values
    ("0010", set(), set()),  # 0011: the claim's index in the claim's order
    ("0011", set(), HISTORY_TABLES),  # 0012: the history keyed by day, its day counts
]


@pytest.mark.parametrize(("revision", "back", "gone"), DOWNGRADES)
def test_down_and_up_again_on_sqlite(
    tmp_path: Path, revision: str, back: set[str], gone: set[str]
) -> None:
    diffs = down_and_up_again(f"sqlite:///{tmp_path / 'migrated.db'}", revision, back, gone)
    assert diffs == [], pformat(diffs)


@pytest.mark.postgres
@pytest.mark.parametrize(("revision", "back", "gone"), DOWNGRADES)
def test_down_and_up_again_on_postgresql(
    empty_pg_url: str, revision: str, back: set[str], gone: set[str]
) -> None:
    diffs = down_and_up_again(empty_pg_url, revision, back, gone)
    assert diffs == [], pformat(diffs)
