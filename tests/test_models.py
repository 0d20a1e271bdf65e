"""The models' helpers."""

from __future__ import annotations

from sqlalchemy import Table

from killcli.db.models import Base, table_of


def test_table_of_gives_every_models_own_table() -> None:
    models = [mapper.class_ for mapper in Base.registry.mappers]
    assert len(models) >= 15
    for model in models:
        table = table_of(model)
        assert isinstance(table, Table)
        assert table is model.__table__
        assert table is Base.metadata.tables[model.__tablename__]
