"""The killmail write path and its read-back.

:func:`save_killmails` writes one batch in the caller's transaction, idempotently:
``INSERT .. ON CONFLICT DO NOTHING RETURNING killmail_id`` tells which killmails are new,
and only those get attacker and item rows. Two workers saving the same killmail at once
are safe: the database lets one insert win and the other sees a conflict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from killcli.db.models import Attacker, CharacterKillmail, Item, Killmail
from killcli.killmail import KillmailRows, build_killmail

KILLMAILS: Table = Killmail.__table__  # type: ignore[assignment]
ATTACKERS: Table = Attacker.__table__  # type: ignore[assignment]
ITEMS: Table = Item.__table__  # type: ignore[assignment]
CHARACTER_KILLMAILS: Table = CharacterKillmail.__table__  # type: ignore[assignment]
READ_CHUNK = 500
COPY_MIN_ROWS = 100  # below this, an executemany costs no more than setting up a COPY


@dataclass(frozen=True)
class SaveResult:
    """What one batch did: ids inserted now, ids that were already stored."""

    new_ids: tuple[int, ...] = ()
    already_ids: tuple[int, ...] = ()
    duplicates_in_batch: int = 0

    @property
    def new(self) -> int:
        return len(self.new_ids)

    @property
    def already(self) -> int:
        return len(self.already_ids)


@dataclass
class SaveTotals:
    """Running totals over several batches (for import and sync figures)."""

    new: int = 0
    already: int = 0
    new_ids: list[int] = field(default_factory=list)

    def add(self, result: SaveResult) -> None:
        self.new += result.new
        self.already += result.already + result.duplicates_in_batch
        self.new_ids.extend(result.new_ids)


def dialect_insert(session: Session, table: Table) -> Any:
    """The dialect's own ``INSERT`` (it has ``on_conflict_do_nothing/do_update``)."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)


def insert_ignore(session: Session, table: Table) -> Any:
    """``INSERT .. ON CONFLICT DO NOTHING`` for a table."""
    return dialect_insert(session, table).on_conflict_do_nothing()


def save_killmails(session: Session, batch: Sequence[KillmailRows]) -> SaveResult:
    """Insert a batch of parsed killmails; already stored ones are left untouched."""
    unique: dict[int, KillmailRows] = {}
    for rows in batch:
        unique.setdefault(rows.killmail_id, rows)
    if not unique:
        return SaveResult()
    stmt = insert_ignore(session, KILLMAILS).returning(KILLMAILS.c.killmail_id)
    new_ids = set(session.scalars(stmt, [r.killmail for r in unique.values()]).all())
    _insert_children(session, ATTACKERS, [a for kid in new_ids for a in unique[kid].attackers])
    _insert_children(session, ITEMS, [i for kid in new_ids for i in unique[kid].items])
    ordered = [kid for kid in unique if kid in new_ids]
    return SaveResult(
        new_ids=tuple(ordered),
        already_ids=tuple(kid for kid in unique if kid not in new_ids),
        duplicates_in_batch=len(batch) - len(unique),
    )


def _insert_children(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert attacker or item rows of new killmails: they never conflict.

    Only the transaction whose ``INSERT .. ON CONFLICT`` inserted a killmail writes its
    children, so on PostgreSQL they go through ``COPY``, about twice as fast as an
    executemany of the same rows. Values pass the columns' own bind processors (the JSON
    ``extra``), so what is stored is exactly what an INSERT would store.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql" or len(rows) < COPY_MIN_ROWS:
        session.execute(table.insert(), rows)
        return
    columns = list(rows[0])
    processors = [table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                  for name in columns]
    quote = dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(map(quote, columns))}) FROM STDIN"
    driver = session.connection().connection.driver_connection
    assert driver is not None  # a checked-out connection always has one
    cursor = driver.cursor()
    with cursor, cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row([value if process is None else process(value)
                            for process, value in zip(processors, map(row.__getitem__, columns),
                                                      strict=True)])


def link_characters(session: Session, pairs: Iterable[tuple[int, int]]) -> None:
    """Record that character ``c`` received killmail ``k`` for each ``(c, k)``."""
    rows = [{"character_id": c, "killmail_id": k} for c, k in set(pairs)]
    if rows:
        session.execute(insert_ignore(session, CHARACTER_KILLMAILS), rows)


def existing_killmail_ids(session: Session, ids: Iterable[int]) -> set[int]:
    """Which of these killmail ids are stored (one query per call)."""
    wanted = list(set(ids))
    found: set[int] = set()
    for start in range(0, len(wanted), READ_CHUNK):
        chunk = wanted[start : start + READ_CHUNK]
        found.update(session.scalars(
            select(KILLMAILS.c.killmail_id).where(KILLMAILS.c.killmail_id.in_(chunk))
        ))
    return found


def count_killmails(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(KILLMAILS)) or 0)


def iter_killmail_bodies(
    session: Session,
    *,
    character_id: int | None = None,
    since: datetime | None = None,
    chunk: int = READ_CHUNK,
) -> Iterator[dict[str, Any]]:
    """Stored killmails as ESI bodies, by ascending id, a chunk of rows at a time."""
    last_id: int | None = None
    while True:
        query = select(KILLMAILS).order_by(KILLMAILS.c.killmail_id).limit(chunk)
        if last_id is not None:
            query = query.where(KILLMAILS.c.killmail_id > last_id)
        if since is not None:
            query = query.where(KILLMAILS.c.killmail_time >= since)
        if character_id is not None:
            linked = select(CHARACTER_KILLMAILS.c.killmail_id).where(
                CHARACTER_KILLMAILS.c.character_id == character_id
            )
            query = query.where(KILLMAILS.c.killmail_id.in_(linked))
        killmails = [dict(row) for row in session.execute(query).mappings()]
        if not killmails:
            return
        ids = [row["killmail_id"] for row in killmails]
        attackers = _children(session, ATTACKERS, ids)
        items = _children(session, ITEMS, ids)
        for row in killmails:
            kid = row["killmail_id"]
            yield build_killmail(row, attackers.get(kid, []), items.get(kid, []))
        last_id = ids[-1]


def _children(session: Session, table: Table, ids: list[int]) -> dict[int, list[Any]]:
    query = (
        select(table)
        .where(table.c.killmail_id.in_(ids))
        .order_by(table.c.killmail_id, table.c.position)
    )
    grouped: dict[int, list[Any]] = defaultdict(list)
    for row in session.execute(query).mappings():
        grouped[row["killmail_id"]].append(row)
    return grouped
