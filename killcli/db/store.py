"""The killmail write path and its read-back.

:func:`save_killmails` writes one batch in the caller's transaction, idempotently:
``INSERT .. ON CONFLICT DO NOTHING RETURNING killmail_id`` tells which killmails are new,
and only those get attacker and item rows. Two workers saving the same killmail at once
are safe: the database lets one insert win and the other sees a conflict.

With ``isolate=True`` a killmail the database refuses (a constraint, a value out of its
range) costs only itself: the batch runs in a savepoint and, only when that fails, is
retried one killmail per savepoint, so the fast path stays one round of statements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import InstrumentedAttribute, Session

from killcli.db.models import (
    Attacker,
    Character,
    CharacterKillmail,
    Corporation,
    CorporationKillmail,
    Item,
    Killmail,
    table_of,
)
from killcli.killmail import KillmailRows, build_killmail

KILLMAILS = table_of(Killmail)
ATTACKERS = table_of(Attacker)
ITEMS = table_of(Item)
CHARACTER_KILLMAILS = table_of(CharacterKillmail)
CHARACTERS = table_of(Character)
CORPORATION_KILLMAILS = table_of(CorporationKillmail)
CORPORATIONS = table_of(Corporation)
READ_CHUNK = 500
COPY_MIN_ROWS = 100  # below this, an executemany costs no more than setting up a COPY
_MAYBE_REFUSED = (StatementError, UnicodeError)  # narrowed by is_record_fault()


@dataclass(frozen=True)
class RejectedKillmail:
    """A killmail the database refused, and its reason (the driver's first line)."""

    killmail_id: int
    reason: str


@dataclass(frozen=True)
class SaveResult:
    """What one batch did: ids inserted now, ids already stored, killmails refused."""

    new_ids: tuple[int, ...] = ()
    already_ids: tuple[int, ...] = ()
    duplicates_in_batch: int = 0
    rejected: tuple[RejectedKillmail, ...] = ()

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


def save_killmails(
    session: Session, batch: Sequence[KillmailRows], *, isolate: bool = False
) -> SaveResult:
    """Insert a batch of parsed killmails; already stored ones are left untouched.

    ``isolate=False``: any refusal fails the whole batch (the caller's transaction).
    ``isolate=True``: refused killmails are left out and listed in ``rejected``; the
    others are stored.
    """
    unique: dict[int, KillmailRows] = {}
    for rows in batch:
        unique.setdefault(rows.killmail_id, rows)
    if not unique:
        return SaveResult()
    if not isolate:
        new_ids = _insert_unique(session, list(unique.values()))
        return _result(unique, new_ids, len(batch))
    try:
        with session.begin_nested():
            new_ids = _insert_unique(session, list(unique.values()))
    except _MAYBE_REFUSED as exc:
        if not is_record_fault(exc):
            raise
        return _save_one_by_one(session, unique, len(batch))
    return _result(unique, new_ids, len(batch))


def is_record_fault(exc: BaseException) -> bool:
    """Whether the database refused the data (vs. a connection or locking problem)."""
    if isinstance(exc, IntegrityError | DataError | UnicodeError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _insert_unique(session: Session, unique: list[KillmailRows]) -> set[int]:
    """Insert killmails with distinct ids and their children; returns the new ids."""
    stmt = insert_ignore(session, KILLMAILS).returning(KILLMAILS.c.killmail_id)
    new_ids = set(session.scalars(stmt, [r.killmail for r in unique]).all())
    new = [r for r in unique if r.killmail_id in new_ids]
    _insert_children(session, ATTACKERS, [a for r in new for a in r.attackers])
    _insert_children(session, ITEMS, [i for r in new for i in r.items])
    return new_ids


def _save_one_by_one(session: Session, unique: dict[int, KillmailRows], size: int) -> SaveResult:
    """The fallback after a refused batch: one savepoint per killmail."""
    new_ids: set[int] = set()
    rejected: list[RejectedKillmail] = []
    for kid, rows in unique.items():
        try:
            with session.begin_nested():
                new_ids |= _insert_unique(session, [rows])
        except _MAYBE_REFUSED as exc:
            if not is_record_fault(exc):
                raise
            rejected.append(RejectedKillmail(kid, _first_line(exc)))
    refused = {r.killmail_id for r in rejected}
    kept = {kid: rows for kid, rows in unique.items() if kid not in refused}
    return replace(_result(kept, new_ids, size - len(refused)), rejected=tuple(rejected))


def _first_line(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    text = str(cause).strip().splitlines()
    return (text[0] if text else type(cause).__name__)[:300]


def _result(unique: dict[int, KillmailRows], new_ids: set[int], size: int) -> SaveResult:
    return SaveResult(
        new_ids=tuple(kid for kid in unique if kid in new_ids),
        already_ids=tuple(kid for kid in unique if kid not in new_ids),
        duplicates_in_batch=size - len(unique),
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
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    ]
    quote = dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(map(quote, columns))}) FROM STDIN"
    driver = session.connection().connection.driver_connection
    assert driver is not None  # a checked-out connection always has one
    cursor = driver.cursor()
    try:
        with cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(
                    [
                        value if process is None else process(value)
                        for process, value in zip(
                            processors, map(row.__getitem__, columns), strict=True
                        )
                    ]
                )
    except dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy wraps an INSERT's errors
        raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc


def link_characters(session: Session, pairs: Iterable[tuple[int, int]]) -> None:
    """Record that character ``c`` received killmail ``k`` for each ``(c, k)``, and
    raise each character's ``newest_killmail_at`` to the newest of them (stored ones)."""
    rows = [{"character_id": c, "killmail_id": k} for c, k in set(pairs)]
    if not rows:
        return
    session.execute(insert_ignore(session, CHARACTER_KILLMAILS), rows)
    by_character: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        by_character[row["character_id"]].append(row["killmail_id"])
    for character_id, ids in by_character.items():
        _raise_newest_killmail(session, CHARACTERS.c.character_id == character_id, CHARACTERS, ids)


def link_corporation(session: Session, corporation_id: int, killmail_ids: Iterable[int]) -> None:
    """Record that a corporation's list held these stored killmails, and raise its
    ``newest_killmail_at`` (the adaptive cadence) to the newest of them."""
    ids = sorted(set(killmail_ids))
    if not ids:
        return
    session.execute(
        insert_ignore(session, CORPORATION_KILLMAILS),
        [{"corporation_id": corporation_id, "killmail_id": k} for k in ids],
    )
    _raise_newest_killmail(
        session, CORPORATIONS.c.corporation_id == corporation_id, CORPORATIONS, ids
    )


def _raise_newest_killmail(
    session: Session, owner: ColumnElement[bool], table: Table, ids: list[int]
) -> None:
    """One UPDATE: the adaptive cadence reads this column instead of a join per cron run."""
    newest = (
        select(func.max(KILLMAILS.c.killmail_time))
        .where(KILLMAILS.c.killmail_id.in_(ids))
        .scalar_subquery()
    )
    column = table.c.newest_killmail_at
    session.execute(
        update(table)
        .where(owner, or_(column.is_(None), column < newest))
        .values(newest_killmail_at=newest)
    )


def existing_killmail_ids(session: Session, ids: Iterable[int]) -> set[int]:
    """Which of these killmail ids are stored (one query per call)."""
    wanted = list(set(ids))
    found: set[int] = set()
    for start in range(0, len(wanted), READ_CHUNK):
        chunk = wanted[start : start + READ_CHUNK]
        found.update(
            session.scalars(
                select(KILLMAILS.c.killmail_id).where(KILLMAILS.c.killmail_id.in_(chunk))
            )
        )
    return found


def count_killmails(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(KILLMAILS)) or 0)


def iter_killmail_bodies(
    session: Session,
    *,
    character_id: int | None = None,
    corporation_id: int | None = None,
    since: datetime | None = None,
    chunk: int = READ_CHUNK,
) -> Iterator[dict[str, Any]]:
    """Stored killmails as ESI bodies, by ascending id, a chunk of rows at a time (only a
    character's or a corporation's, when given)."""
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
        if corporation_id is not None:
            held = select(CORPORATION_KILLMAILS.c.killmail_id).where(
                CORPORATION_KILLMAILS.c.corporation_id == corporation_id
            )
            query = query.where(KILLMAILS.c.killmail_id.in_(held))
        stored = read_killmail_rows(session, query)
        if not stored:
            return
        for rows in stored:
            yield build_killmail(rows.killmail, rows.attackers, rows.items)
        last_id = stored[-1].killmail_id


def read_killmail_rows(session: Session, query: Select[Any]) -> list[KillmailRows]:
    """The stored rows of the killmails ``query`` selects (whole ``killmails`` rows), in
    its order, with their attackers and items by position: :func:`build_killmail` turns
    each back into its exact ESI body."""
    killmails = [dict(row) for row in session.execute(query).mappings()]
    ids = [row["killmail_id"] for row in killmails]
    attackers = _children(session, ATTACKERS, ids) if ids else {}
    items = _children(session, ITEMS, ids) if ids else {}
    return [
        KillmailRows(
            row,
            [dict(a) for a in attackers.get(row["killmail_id"], [])],
            [dict(i) for i in items.get(row["killmail_id"], [])],
        )
        for row in killmails
    ]


def get_killmail_rows(session: Session, killmail_id: int) -> KillmailRows | None:
    """One stored killmail's rows, None when it is not stored."""
    found = read_killmail_rows(
        session, select(KILLMAILS).where(KILLMAILS.c.killmail_id == killmail_id)
    )
    return found[0] if found else None


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


def count_by(session: Session, column: InstrumentedAttribute[Any]) -> dict[Any, int]:
    """Rows per value of ``column`` (killmails per character, pending bodies per
    corporation, ...), one ``GROUP BY`` query."""
    rows = session.execute(select(column, func.count()).group_by(column)).all()
    return dict(rows)
