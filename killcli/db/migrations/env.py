"""Alembic environment: migrations run on the connection killsync hands over."""

from __future__ import annotations

from alembic import context

from killcli.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - killsync always passes its connection
    raise RuntimeError("run migrations with `killsync db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
