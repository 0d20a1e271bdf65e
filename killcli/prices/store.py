"""Writing and reading the price history (``market_history``) fast.

Rows arrive as tuples of ``HISTORY_COLUMNS`` with the date as ``YYYY-MM-DD`` text (what
SQLite stores for a ``DATE`` and PostgreSQL parses), so millions of them pass no
per-value conversion in Python: SQLite gets one ``executemany`` of ``INSERT .. ON
CONFLICT DO UPDATE`` straight on the driver's cursor, PostgreSQL a ``COPY`` into a
temporary table and one ``INSERT .. SELECT .. ON CONFLICT DO UPDATE``. Both are
idempotent: importing a day again leaves the same rows.

Every import or sync also notes the earliest day it changed (``price_changes``, per type
or for every type), which is how `killsync values` finds the values to recompute.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from killcli.db.models import MarketHistory, MarketPrice, PriceChange, table_of

HISTORY = table_of(MarketHistory)
CHANGES = table_of(PriceChange)
MARKET_PRICES = table_of(MarketPrice)
HISTORY_COLUMNS = (
    "region_id",
    "type_id",
    "date",
    "average",
    "highest",
    "lowest",
    "volume",
    "order_count",
)
HistoryTuple = tuple[int, int, str, float, float, float, int, int]
_VALUES = ("average", "highest", "lowest", "volume", "order_count")


_NAMES = ", ".join(HISTORY_COLUMNS)
_CONFLICT = "ON CONFLICT (region_id, type_id, date) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _VALUES
)
# Identifiers are the constants above; values only ever travel as parameters or COPY rows.
_SQLITE_UPSERT = "INSERT INTO market_history (%s) VALUES (%s) %s" % (  # noqa: S608, UP031
    _NAMES,
    ", ".join("?" * len(HISTORY_COLUMNS)),
    _CONFLICT,
)
_PG_LOAD = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS market_history_load "
    "(LIKE market_history INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_PG_COPY = "COPY market_history_load (%s) FROM STDIN" % _NAMES  # noqa: UP031
# ON CONFLICT may touch a row once per statement: a day repeated in one batch (a
# malformed file) keeps one of its rows.
_PG_UPSERT = " ".join(
    (
        f"INSERT INTO market_history ({_NAMES})",
        f"SELECT DISTINCT ON (region_id, type_id, date) {_NAMES} FROM market_history_load",  # noqa: S608
        f"ORDER BY region_id, type_id, date {_CONFLICT}",
    )
)


def save_history(session: Session, rows: Sequence[HistoryTuple]) -> None:
    """Insert or update history rows in the caller's transaction."""
    if not rows:
        return
    driver = session.connection().connection.driver_connection
    assert driver is not None  # a checked-out connection always has one
    if session.get_bind().dialect.name != "postgresql":
        cursor = driver.cursor()
        try:
            cursor.executemany(_SQLITE_UPSERT, rows)
        finally:
            cursor.close()
        return
    with driver.cursor() as cursor:
        cursor.execute(_PG_LOAD)
        with cursor.copy(_PG_COPY) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(_PG_UPSERT)
        cursor.execute("DELETE FROM market_history_load")


def note_change(
    session: Session, region_id: int, type_id: int | None, first_date: date, when: datetime
) -> None:
    """Record that prices changed from ``first_date`` on: one type's, or (``type_id``
    None) every type's, as when a daily archive is imported."""
    session.execute(
        CHANGES.insert(),
        [
            {
                "region_id": region_id,
                "type_id": type_id,
                "first_date": first_date,
                "changed_at": when,
            }
        ],
    )


def load_averages(
    session: Session,
    region_id: int,
    type_ids: Iterable[int] | None,
    first: date | None = None,
    last: date | None = None,
) -> dict[int, dict[date, float]]:
    """Daily averages by type (every type's when ``type_ids`` is None), between ``first``
    and ``last`` when given."""
    base = select(HISTORY.c.type_id, HISTORY.c.date, HISTORY.c.average).where(
        HISTORY.c.region_id == region_id
    )
    if first is not None:
        base = base.where(HISTORY.c.date >= first)
    if last is not None:
        base = base.where(HISTORY.c.date <= last)
    if type_ids is None:
        out: dict[int, dict[date, float]] = {}
        for type_id, day, average in session.execute(base):
            out.setdefault(type_id, {})[day] = average
        return out
    wanted = sorted(set(type_ids))
    out = {t: {} for t in wanted}
    for start in range(0, len(wanted), 500):
        query = base.where(HISTORY.c.type_id.in_(wanted[start : start + 500]))
        for type_id, day, average in session.execute(query):
            out[type_id][day] = average
    return out


def stored_day_counts(
    session: Session, region_id: int, type_ids: Iterable[int] | None = None
) -> dict[int, tuple[int, date]]:
    """How many days each type of the region has stored, and its first (of ``type_ids``,
    else of every type)."""
    query = (
        select(HISTORY.c.type_id, func.count(), func.min(HISTORY.c.date))
        .where(HISTORY.c.region_id == region_id)
        .group_by(HISTORY.c.type_id)
    )
    if type_ids is None:
        return {t: (int(n), _as_date(d)) for t, n, d in session.execute(query)}
    wanted = sorted(set(type_ids))
    out: dict[int, tuple[int, date]] = {}
    for start in range(0, len(wanted), 500):
        chunk = query.where(HISTORY.c.type_id.in_(wanted[start : start + 500]))
        out.update({t: (int(n), _as_date(d)) for t, n, d in session.execute(chunk)})
    return out


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def newest_history_day(session: Session, region_id: int) -> date | None:
    """The newest day the region's history holds."""
    day = session.scalar(select(func.max(HISTORY.c.date)).where(HISTORY.c.region_id == region_id))
    return day if isinstance(day, date) or day is None else date.fromisoformat(str(day))


def load_fallback_prices(session: Session) -> dict[int, float]:
    """``/markets/prices`` averages (adjusted prices where no average) by type."""
    rows = session.execute(
        select(
            MARKET_PRICES.c.type_id,
            MARKET_PRICES.c.average_price,
            MARKET_PRICES.c.adjusted_price,
        )
    )
    out: dict[int, float] = {}
    for type_id, average, adjusted in rows:
        value = average if average is not None else adjusted
        if value is not None:
            out[type_id] = value
    return out
