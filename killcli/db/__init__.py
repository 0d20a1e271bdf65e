"""Database layer: typed models, engine/session factory, migrations and the write path."""

from __future__ import annotations

from killcli.db.engine import Database

__all__ = ["Database"]
