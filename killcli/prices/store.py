"""Writing and reading the price history (``market_history``) fast.

The history is keyed ``(region, date, type)``: a daily archive's rows append to it. Rows
arrive as tuples of ``HISTORY_COLUMNS`` with the date as ``YYYY-MM-DD`` text (what SQLite
stores for a ``DATE`` and PostgreSQL parses): SQLite gets one ``executemany`` of ``INSERT
.. ON CONFLICT DO UPDATE`` straight on the driver's cursor, PostgreSQL a ``COPY`` into a
temporary table and one ``INSERT .. SELECT .. ON CONFLICT DO UPDATE`` (a clean archive
file takes a faster road still: :mod:`killcli.prices.pgcopy`). Both are idempotent:
importing a day again leaves the same rows.

What the valuation needs by type, how many days a type has stored and its first, is
kept in ``market_history_types`` by every write: rows of days already there are looked
up and counted at once; a big batch of a day with no rows yet (a bulk import) marks the
day pending (``market_history_pending``), counted in one grouped pass at the end of the
import (:func:`count_pending_days`); readers add pending days' rows themselves.

Every import or sync also notes the earliest day it changed (``price_changes``, per type
or for every type), which is how `killsync values` finds the values to recompute.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from killcli.db.models import (
    MarketHistory,
    MarketHistoryPending,
    MarketHistoryType,
    MarketPrice,
    PriceChange,
    table_of,
)
from killcli.db.store import dialect_insert

HISTORY = table_of(MarketHistory)
TYPES = table_of(MarketHistoryType)
PENDING = table_of(MarketHistoryPending)
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
#: Type ids by (region, day): how rows are counted into ``market_history_types``.
DayGroups = dict[tuple[int, str], list[int]]
_VALUES = ("average", "highest", "lowest", "volume", "order_count")


_NAMES = ", ".join(HISTORY_COLUMNS)
_KEY = "region_id, date, type_id"  # the primary key, in its order
_CONFLICT = f"ON CONFLICT ({_KEY}) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _VALUES
)
# Identifiers are the constants above; values only ever travel as parameters or COPY rows.
_SQLITE_UPSERT = "INSERT INTO market_history (%s) VALUES (%s) %s" % (  # noqa: S608, UP031
    _NAMES,
    ", ".join("?" * len(HISTORY_COLUMNS)),
    _CONFLICT,
)
PG_LOAD = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS market_history_load "
    "(LIKE market_history INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_PG_COPY = "COPY market_history_load (%s) FROM STDIN" % _NAMES  # noqa: UP031
# One COPY text line per row, formatted by one C call each (floats by repr: exact).
_PG_LINE = "%d\t%d\t%s\t%r\t%r\t%r\t%d\t%d"
# ON CONFLICT may touch a row once per statement: a day repeated in one batch (a
# malformed file) keeps one of its rows.
_PG_UPSERT = " ".join(
    (
        f"INSERT INTO market_history ({_NAMES})",
        f"SELECT DISTINCT ON ({_KEY}) {_NAMES} FROM market_history_load",  # noqa: S608
        f"ORDER BY {_KEY} {_CONFLICT}",
    )
)
#: From this many rows of one day in one batch, a day without rows yet is counted later,
#: in one pass (:func:`count_pending_days`), instead of row by row.
BULK_DAY_ROWS = 1_000
_IN_CHUNK = 400


def save_history(
    session: Session, rows: Sequence[HistoryTuple], groups: DayGroups | None = None
) -> None:
    """Insert or update history rows in the caller's transaction, keeping each type's
    day count (``market_history_types``) right. ``groups``: the rows' :func:`by_day`,
    when the caller has it already."""
    if not rows:
        return
    driver = session.connection().connection.driver_connection
    assert driver is not None  # a checked-out connection always has one
    if session.get_bind().dialect.name != "postgresql":
        _count_new_days(session, by_day(rows) if groups is None else groups)
        cursor = driver.cursor()
        try:
            cursor.executemany(_SQLITE_UPSERT, rows)
        finally:
            cursor.close()
        return
    with driver.cursor() as cursor:
        cursor.execute(PG_LOAD)
        with cursor.copy(_PG_COPY) as copy:
            copy.write("\n".join(map(_PG_LINE.__mod__, rows)) + "\n")
    count_loaded_days(session)
    upsert_loaded(session)


def upsert_loaded(session: Session) -> None:
    """PostgreSQL: the rows of ``market_history_load`` into the history, then emptied."""
    session.execute(text(_PG_UPSERT))
    session.execute(text("DELETE FROM market_history_load"))


# The rows of market_history_load whose days are not pending and not stored yet, added
# to their types' counts (one row per type: ON CONFLICT touches each once).
_PG_COUNT_LOADED = """
INSERT INTO market_history_types (region_id, type_id, days, first_date)
SELECT region_id, type_id, count(*), min(date) FROM (
    SELECT DISTINCT l.region_id, l.type_id, l.date FROM market_history_load l
    WHERE NOT EXISTS (SELECT 1 FROM market_history_pending p
                      WHERE p.region_id = l.region_id AND p.date = l.date)
      AND NOT EXISTS (SELECT 1 FROM market_history h WHERE h.region_id = l.region_id
                      AND h.date = l.date AND h.type_id = l.type_id)
) AS added GROUP BY region_id, type_id
ON CONFLICT (region_id, type_id) DO UPDATE SET
    days = market_history_types.days + excluded.days,
    first_date = least(market_history_types.first_date, excluded.first_date)
"""


def count_loaded_days(session: Session) -> None:
    """PostgreSQL, before ``market_history_load`` is stored: the days it adds to each
    type's count (a big day without rows yet only marked pending, as on SQLite)."""
    days = session.execute(
        text("SELECT region_id, date, count(*) FROM market_history_load GROUP BY region_id, date")
    ).all()
    pending = pending_days(session, {r for r, _, _ in days})
    for region_id, day, count in days:
        if (
            count >= BULK_DAY_ROWS
            and day not in pending.get(region_id, ())
            and not has_rows(session, region_id, day)
        ):
            session.execute(PENDING.insert(), [{"region_id": region_id, "date": day}])
    session.execute(text(_PG_COUNT_LOADED))


def by_day(rows: Sequence[HistoryTuple]) -> DayGroups:
    """The rows' type ids by (region, day)."""
    regions, days = set(map(itemgetter(0), rows)), set(map(itemgetter(2), rows))
    if len(regions) == 1 and len(days) == 1:  # a daily archive's batch: no loop in Python
        return {(regions.pop(), days.pop()): list(map(itemgetter(1), rows))}
    out: DayGroups = {}
    for region_id, type_id, day, *_ in rows:
        out.setdefault((region_id, day), []).append(type_id)
    return out


def _count_new_days(session: Session, groups: DayGroups) -> None:
    """Before rows are written (``groups``: their type ids by day): count the days they
    add to each type. A big batch of a day with no rows yet (a bulk import) only marks
    the day pending (counted in one pass later); other rows are looked up and counted now."""
    pending = pending_days(session, {r for r, _ in groups})
    small: dict[tuple[int, date], list[int]] = {}
    for (region_id, text_day), type_ids in groups.items():
        day = date.fromisoformat(text_day)
        if day in pending.get(region_id, ()):
            continue  # the pass that counts the day will count these rows too
        if len(type_ids) >= BULK_DAY_ROWS and not has_rows(session, region_id, day):
            session.execute(PENDING.insert(), [{"region_id": region_id, "date": day}])
        else:
            small[region_id, day] = type_ids
    if small:
        _count_now(session, small)


def pending_days(session: Session, regions: Iterable[int]) -> dict[int, set[date]]:
    query = select(PENDING.c.region_id, PENDING.c.date).where(
        PENDING.c.region_id.in_(sorted(regions))
    )
    out: dict[int, set[date]] = {}
    for region_id, day in session.execute(query):
        out.setdefault(region_id, set()).add(day)
    return out


def has_rows(session: Session, region_id: int, day: date) -> bool:
    query = select(HISTORY.c.type_id).where(HISTORY.c.region_id == region_id, HISTORY.c.date == day)
    return session.execute(query.limit(1)).first() is not None


def _count_now(session: Session, groups: Mapping[tuple[int, date], list[int]]) -> None:
    """Add the days of ``groups`` not stored yet to their types' counts."""
    added: dict[tuple[int, int], list[date]] = {}
    for region_id in {r for r, _ in groups}:
        mine = {day: types for (r, day), types in groups.items() if r == region_id}
        stored = _stored_pairs(session, region_id, mine)
        for day, types in mine.items():
            for type_id in set(types):
                if (day, type_id) not in stored:
                    added.setdefault((region_id, type_id), []).append(day)
    if added:
        _add_counts(session, [(r, t, len(days), min(days)) for (r, t), days in added.items()])


def _stored_pairs(
    session: Session, region_id: int, groups: Mapping[date, list[int]]
) -> set[tuple[date, int]]:
    """Which of the (day, type) pairs of ``groups`` the history holds (point reads)."""
    days = sorted(groups)
    types = sorted({t for ts in groups.values() for t in ts})
    found: set[tuple[date, int]] = set()
    for first in range(0, len(days), _IN_CHUNK):
        for start in range(0, len(types), _IN_CHUNK):
            query = select(HISTORY.c.date, HISTORY.c.type_id).where(
                HISTORY.c.region_id == region_id,
                HISTORY.c.date.in_(days[first : first + _IN_CHUNK]),
                HISTORY.c.type_id.in_(types[start : start + _IN_CHUNK]),
            )
            found.update((d, t) for d, t in session.execute(query))
    return found


def _add_counts(session: Session, counts: Sequence[tuple[int, int, int, date]]) -> None:
    """Add ``(region, type, days, first day)`` to the types' counts."""
    stmt = dialect_insert(session, TYPES)
    session.execute(
        _adding_to_counts(session, stmt),
        [{"region_id": r, "type_id": t, "days": n, "first_date": d} for r, t, n, d in counts],
    )


def _adding_to_counts(session: Session, stmt: Any) -> Any:
    """``stmt`` (an insert into the types' counts) adding its days to a type's count and
    keeping the earlier first day when the type has one already."""
    earliest = func.least if session.get_bind().dialect.name == "postgresql" else func.min
    return stmt.on_conflict_do_update(
        index_elements=[TYPES.c.region_id, TYPES.c.type_id],
        set_={
            "days": TYPES.c.days + stmt.excluded.days,
            "first_date": earliest(TYPES.c.first_date, stmt.excluded.first_date),
        },
    )


def count_pending_days(session: Session) -> int:
    """Count the rows of the pending days into their types' day counts (one grouped
    pass a few hundred days at a time); how many days were counted."""
    pending = pending_days(session, session.scalars(select(PENDING.c.region_id).distinct()))
    for region_id, days in pending.items():
        ordered = sorted(days)
        for start in range(0, len(ordered), _IN_CHUNK):
            chunk = ordered[start : start + _IN_CHUNK]
            grouped = (
                select(
                    HISTORY.c.region_id, HISTORY.c.type_id, func.count(), func.min(HISTORY.c.date)
                )
                .where(HISTORY.c.region_id == region_id, HISTORY.c.date.in_(chunk))
                .group_by(HISTORY.c.region_id, HISTORY.c.type_id)
            )
            stmt = dialect_insert(session, TYPES).from_select(
                ["region_id", "type_id", "days", "first_date"], grouped
            )
            session.execute(_adding_to_counts(session, stmt))
            session.execute(
                delete(PENDING).where(PENDING.c.region_id == region_id, PENDING.c.date.in_(chunk))
            )
    return sum(map(len, pending.values()))


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


def settle_day_counts(session: Session, region_id: int) -> bool:
    """Count the pending days, then check the region's day counts against its rows
    (two counts) and count them all again if they differ (rows written around
    :func:`save_history`, by hand or by an older killsync); whether they were."""
    count_pending_days(session)
    counted = session.scalar(
        select(func.coalesce(func.sum(TYPES.c.days), 0)).where(TYPES.c.region_id == region_id)
    )
    stored = session.scalar(
        select(func.count()).select_from(HISTORY).where(HISTORY.c.region_id == region_id)
    )
    if int(counted or 0) == int(stored or 0):
        return False
    session.execute(delete(TYPES).where(TYPES.c.region_id == region_id))
    grouped = (
        select(HISTORY.c.region_id, HISTORY.c.type_id, func.count(), func.min(HISTORY.c.date))
        .where(HISTORY.c.region_id == region_id)
        .group_by(HISTORY.c.region_id, HISTORY.c.type_id)
    )
    session.execute(
        TYPES.insert().from_select(["region_id", "type_id", "days", "first_date"], grouped)
    )
    return True


def load_averages(
    session: Session,
    region_id: int,
    type_ids: Iterable[int] | None,
    first: date | None = None,
    last: date | None = None,
) -> dict[int, dict[date, float]]:
    """Daily averages by type (every type's when ``type_ids`` is None), between ``first``
    and ``last`` when given. The history is keyed by day: every type's days are one
    range; some types' days are read point by point (each day of the span asked)."""
    base = select(HISTORY.c.type_id, HISTORY.c.date, HISTORY.c.average).where(
        HISTORY.c.region_id == region_id
    )
    if type_ids is None:
        return _window(session, region_id, first, last)
    wanted = sorted(set(type_ids))
    out: dict[int, dict[date, float]] = {t: {} for t in wanted}
    if not wanted:
        return out
    if first is None:
        firsts = [d for _, d in stored_day_counts(session, region_id, wanted).values()]
        first = min(firsts, default=None)
    last = last if last is not None else newest_history_day(session, region_id)
    if first is None or last is None or last < first:
        return out
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    for low in range(0, len(days), _IN_CHUNK):
        for start in range(0, len(wanted), _IN_CHUNK):
            query = base.where(
                HISTORY.c.date.in_(days[low : low + _IN_CHUNK]),
                HISTORY.c.type_id.in_(wanted[start : start + _IN_CHUNK]),
            )
            for type_id, day, average in session.execute(query):
                out[type_id][day] = average
    return out


def raw_rows(session: Session, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) straight from the driver: no per-row work in
    SQLAlchemy, for reads of many rows of plain values (SQLite's dates come as text)."""
    driver: Any = session.connection().connection.driver_connection
    if session.get_bind().dialect.name == "postgresql":
        sql = sql.replace("?", "%s")
    cursor = driver.cursor()
    try:
        cursor.execute(sql, list(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _window(
    session: Session, region_id: int, first: date | None, last: date | None
) -> dict[int, dict[date, float]]:
    """Every type's averages from ``first`` to ``last``: one range of the key."""
    sql = "SELECT type_id, date, average FROM market_history WHERE region_id = ?"
    params: list[Any] = [region_id]
    text_days = session.get_bind().dialect.name != "postgresql"
    for bound, op in ((first, ">="), (last, "<=")):
        if bound is not None:
            sql += f" AND date {op} ?"
            params.append(bound.isoformat() if text_days else bound)
    days: dict[Any, date] = {}
    out: dict[int, dict[date, float]] = {}
    for type_id, day, average in raw_rows(session, sql, params):
        when = days.get(day)
        if when is None:
            when = days[day] = day if isinstance(day, date) else date.fromisoformat(day)
        out.setdefault(type_id, {})[when] = average
    return out


# NaN is no price (as in DailyAverages.of): PostgreSQL sorts it above every number,
# SQLite stores it as NULL.
_DAY_AVERAGES = (
    "SELECT type_id, average FROM market_history"
    " WHERE region_id = ? AND date = ? AND average > 0 AND average <> 'NaN'"
)


def daily_averages(
    session: Session, region_id: int, first: date, last: date
) -> Iterator[tuple[date, list[tuple[int, float]]]]:
    """Every type's averages > 0 a day at a time, from ``first`` to ``last`` (one range
    of the key each: the rows of a day are contiguous)."""
    text_days = session.get_bind().dialect.name != "postgresql"
    day = first
    while day <= last:
        bound: Any = day.isoformat() if text_days else day
        yield day, raw_rows(session, _DAY_AVERAGES, [region_id, bound])
        day += timedelta(days=1)


def stored_day_counts(
    session: Session, region_id: int, type_ids: Iterable[int] | None = None
) -> dict[int, tuple[int, date]]:
    """How many days each type of the region has stored, and its first (of ``type_ids``,
    else of every type): its counted days plus those of days still pending."""
    query = select(TYPES.c.type_id, TYPES.c.days, TYPES.c.first_date).where(
        TYPES.c.region_id == region_id
    )
    extra = pending_days(session, [region_id]).get(region_id, set())
    grouped = (
        select(HISTORY.c.type_id, func.count(), func.min(HISTORY.c.date))
        .where(HISTORY.c.region_id == region_id, HISTORY.c.date.in_(sorted(extra)))
        .group_by(HISTORY.c.type_id)
    )
    out: dict[int, tuple[int, date]] = {}
    wanted = None if type_ids is None else sorted(set(type_ids))
    chunks = [None] if wanted is None else [
        wanted[s : s + _IN_CHUNK] for s in range(0, len(wanted), _IN_CHUNK)
    ]  # fmt: skip
    for chunk in chunks:
        counted = query if chunk is None else query.where(TYPES.c.type_id.in_(chunk))
        out.update({t: (int(n), _as_date(d)) for t, n, d in session.execute(counted)})
        if not extra:
            continue
        more = grouped if chunk is None else grouped.where(HISTORY.c.type_id.in_(chunk))
        for type_id, count, day in session.execute(more):
            n, before = out.get(type_id, (0, _as_date(day)))
            out[type_id] = (n + int(count), min(before, _as_date(day)))
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
