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
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from killcli.db import Database
from killcli.db.models import Base

COMPARE = {"compare_type": True, "compare_server_default": True}


def schema_differences(url: str) -> list[Any]:
    """Upgrade the empty database at ``url`` to head; what still differs from the models."""
    database = Database(url)
    try:
        before, after = database.upgrade()
        assert before is None and after == database.head_revision()
        with database.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=COMPARE)
            return list(compare_metadata(context, Base.metadata))
    finally:
        database.close()


def test_migrations_build_the_models_schema_on_sqlite(tmp_path: Path) -> None:
    diffs = schema_differences(f"sqlite:///{tmp_path / 'migrated.db'}")
    assert diffs == [], pformat(diffs)


@pytest.mark.postgres
def test_migrations_build_the_models_schema_on_postgresql(empty_pg_url: str) -> None:
    diffs = schema_differences(empty_pg_url)
    assert diffs == [], pformat(diffs)
