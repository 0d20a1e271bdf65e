"""Values of stored killmails (``killmail_values``): computing, storing, recomputing.

* when a killmail is saved (:class:`SaveTimeValuer`): valued at once if the price store
  already reaches its price date and every type's group is cached; its
  ``killmail.saved`` event then carries the value;
* `killsync values` (:func:`compute_values`): killmails without a value, values of an
  older method version, and values whose prices changed since they were computed
  (``price_changes``, written by every import and sync); ``recompute`` redoes all.

Killmails are valued in time order, a chunk at a time, with the chunk's prices loaded in
one read (:class:`StoredPrices`): the 34-day window before the chunk's dates, and a
type's whole history only when its walk back reaches further (sparse history).
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, or_, select, text
from sqlalchemy.orm import Session

from killcli.db import Database
from killcli.db.models import Item, Killmail, KillmailValue, PriceChange, table_of
from killcli.db.store import dialect_insert
from killcli.db.types import utcnow
from killcli.esi.market import Requester
from killcli.killmail import KillmailRows
from killcli.prices.store import (
    daily_averages,
    load_averages,
    load_fallback_prices,
    newest_history_day,
    raw_rows,
    settle_day_counts,
    stored_day_counts,
)
from killcli.universe import TypeInfo, fetch_types, get_types
from killcli.valuation import (
    FALLBACK_SUFFIX,
    MAX_DAYS,
    METHOD,
    DailyAverages,
    ItemRow,
    KillmailValuation,
    PriceBook,
    UnitPrices,
    item_row,
    item_values,
    price_date,
    price_from,
    type_ids_of,
    value_killmail,
    value_rows,
)

KILLMAILS = table_of(Killmail)
ITEMS = table_of(Item)
VALUES = table_of(KillmailValue)
CHANGES = table_of(PriceChange)
CHUNK = 2_000
READ_CHUNK = 500
WINDOW_DAYS = 2 * MAX_DAYS  # history loaded before a chunk's first price date
SLIDE_AT_TYPES = 1_000  # from this many types a chunk, every type's window slides
CURRENT_METHODS = (METHOD, METHOD + FALLBACK_SUFFIX)
_ITEMS_SQL = (
    "SELECT killmail_id, position, parent_position, item_type_id, flag, singleton,"
    " quantity_destroyed, quantity_dropped FROM killmail_items"
)


class StoredPrices(PriceBook):
    """A :class:`PriceBook` over a window of the database's history, for killmails valued
    in time order, a chunk at a time (:meth:`load` before each chunk).

    Few types: their window is read for each chunk. Many (``SLIDE_AT_TYPES``): the window
    of every type slides, each chunk reading only the days it adds, a day at a time,
    appended to each type's sorted days (no re-sorting); now and then the days that fell
    out of it are dropped, keeping a type's last ``MAX_DAYS`` before the window (all a walk
    back from a later day can reach), so a run reads each row of the history about once.
    A type whose walk back needs more than is held (sparse history) is read whole.
    """

    def __init__(
        self,
        region_id: int,
        spans: Mapping[int, tuple[int, date]],
        fallback: Mapping[int, float],
    ) -> None:
        """``spans``: each type's stored days and first day (``stored_day_counts``)."""
        super().__init__(stored_days={t: n for t, (n, _) in spans.items()}, fallback=dict(fallback))
        self._first_day = {t: first for t, (_, first) in spans.items()}
        self._region_id = region_id
        self._session: Session | None = None
        self._held_from: date = date.max  # every type's days are held from here on
        self._span: tuple[date, date] | None = None  # the sliding window, once sliding
        self._complete: set[int] = set()
        self._checked: set[int] = set()  # types asked for since the last load()
        self._enough: set[int] = set()  # sliding: types holding MAX_DAYS days before asks

    def load(self, session: Session, type_ids: Iterable[int], first: date, last: date) -> None:
        """Hold every average a chunk priced from ``first`` to ``last`` may need."""
        self._session = session
        self._checked.clear()
        start = first - timedelta(days=WINDOW_DAYS)
        wanted = {t for t in type_ids if self.stored_days.get(t)}
        if self._span is not None or len(wanted) >= SLIDE_AT_TYPES:
            self._slide(session, start, last)
            return
        self.history = {t: rows for t, rows in self.history.items() if t in self._complete}
        fresh = [t for t in wanted if t not in self._complete]
        self.history.update(load_averages(session, self._region_id, fresh, start, last))
        self.forget()
        self._held_from = start

    def _slide(self, session: Session, start: date, last: date) -> None:
        if self._span is None or start > self._span[1] or last < self._span[1]:
            self._sorted = {  # the types read whole are kept (as they may be in history only)
                t: self._sorted.get(t) or DailyAverages.of(self.history.get(t, {}))
                for t in self._complete
            }
            self._enough.clear()
            self._append_days(session, start, last)
            self._span = (start, last)
        else:
            self._append_days(session, self._span[1] + timedelta(days=1), last)
            self._span = (self._span[0], last)
            if (start - self._span[0]).days > WINDOW_DAYS:  # drop what fell out, now and then
                self._drop_before(start)
                self._span = (start, last)
        self._held_from = self._span[0]

    def _append_days(self, session: Session, first: date, last: date) -> None:
        """Append the averages of ``first`` to ``last`` to every type's held days (later
        than every day held but those of types read whole, which are skipped)."""
        series, complete, stored = self._sorted, self._complete, self.stored_days
        for day, rows in daily_averages(session, self._region_id, first, last):
            ordinal = day.toordinal()
            for type_id, average in rows:
                held = series.get(type_id)
                if held is None:
                    if type_id in complete or type_id not in stored:
                        continue
                    held = series[type_id] = DailyAverages([], [])
                elif type_id in complete:
                    continue
                held.days.append(ordinal)
                held.averages.append(average)

    def _drop_before(self, start: date) -> None:
        """Drop the held days before ``start`` but each type's last ``MAX_DAYS`` of them."""
        cut_at = start.toordinal()
        for type_id, held in self._sorted.items():
            if type_id in self._complete:
                continue
            cut = bisect_left(held.days, cut_at) - MAX_DAYS
            if cut > 0:
                del held.days[:cut]
                del held.averages[:cut]

    def averages(self, type_id: int) -> DailyAverages:
        if self._span is None:
            return super().averages(type_id)
        return self._sorted.get(type_id) or _NO_AVERAGES

    def market_price(self, type_id: int, day: date) -> Decimal | None:
        """The type's price at ``day``. Asked in time order within a chunk: the first
        ask of a type reaches back the farthest, so only it may need the whole history."""
        if self._span is not None:
            if type_id not in self._enough:
                self._check_sliding(type_id, day)
            held = self._sorted.get(type_id)
            count = self.stored_days.get(type_id, 0)
            if held is None or not held.days or count <= 0:
                return None
            return price_from(held, day, count)
        if type_id not in self._checked:
            self._checked.add(type_id)
            self._read_whole_if_needed(type_id, day)
        return self.history_price(type_id, day)

    def _check_sliding(self, type_id: int, day: date) -> None:
        """Sliding: read the type whole if a walk back from ``day`` may reach before its
        held days; a type holding ``MAX_DAYS`` days up to ``day`` never needs to (later
        asks are later, and dropping keeps that many before the window)."""
        held = self._sorted.get(type_id) or _NO_AVERAGES  # none in the window: maybe before
        count = self.stored_days.get(type_id, 0)
        if not count or type_id in self._complete:
            self._enough.add(type_id)
            return
        if bisect_right(held.days, day.toordinal()) >= MAX_DAYS:
            self._enough.add(type_id)
            return
        if type_id in self._checked:
            return
        self._checked.add(type_id)
        reach = day - timedelta(days=count - 1)  # the farthest day a walk may reach
        oldest = date.fromordinal(held.days[0]) if held.days else self._held_from
        held_from = min(oldest, self._held_from)
        first = self._first_day.get(type_id, date.min)
        if reach < held_from and first < held_from:
            assert self._session is not None  # load() ran
            whole = load_averages(self._session, self._region_id, [type_id], first)
            self._sorted[type_id] = DailyAverages.of(whole[type_id])
            self._complete.add(type_id)
            self._enough.add(type_id)

    def _read_whole_if_needed(self, type_id: int, day: date) -> None:
        count = self.stored_days.get(type_id, 0)
        if not count or type_id in self._complete:
            return
        reach = day - timedelta(days=count - 1)  # the farthest day a walk may reach
        first = self._first_day.get(type_id, date.min)
        if (
            reach < self._held_from
            and first < self._held_from  # more before
            and self._held_days(type_id, day) < MAX_DAYS
        ):
            assert self._session is not None  # load() ran
            whole = load_averages(self._session, self._region_id, [type_id], first)
            self.history[type_id] = whole[type_id]
            self.forget(type_id)
            self._complete.add(type_id)

    def _held_days(self, type_id: int, day: date) -> int:
        """How many days of the type are held from the window's start to ``day``."""
        held = self.averages(type_id).days
        return bisect_right(held, day.toordinal()) - bisect_left(held, self._held_from.toordinal())


_NO_AVERAGES = DailyAverages([], [])


@dataclass(frozen=True)
class ValuesResult:
    """What `killsync values` did."""

    valued: int
    unpriced_killmails: int
    with_fallback: int
    changes_covered: int
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        return out


def value_row(valuation: KillmailValuation, computed_at: datetime) -> dict[str, Any]:
    """The ``killmail_values`` row of a valuation."""
    return {
        "killmail_id": valuation.killmail_id,
        "total": valuation.total,
        "destroyed": valuation.destroyed,
        "dropped": valuation.dropped,
        "fitted": valuation.fitted,
        "ship": valuation.ship,
        "price_date": valuation.price_date,
        "method": valuation.method,
        "unpriced_type_ids": list(valuation.unpriced_type_ids),
        "computed_at": computed_at,
    }


def save_values(session: Session, valuations: Sequence[KillmailValuation]) -> None:
    """Insert or replace values in the caller's transaction."""
    if not valuations:
        return
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        _copy_values(session, [value_row(v, now) for v in valuations])
        return
    stmt = dialect_insert(session, VALUES)
    columns = [c.name for c in VALUES.c if c.name != "killmail_id"]
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[VALUES.c.killmail_id],
            set_={c: stmt.excluded[c] for c in columns},
        ),
        [value_row(v, now) for v in valuations],
    )


_VALUE_COLUMNS = [c.name for c in VALUES.c]
_PG_VALUES_LOAD = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS killmail_values_load "
    "(LIKE killmail_values INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
# Identifiers are the model's column names; values only ever travel as COPY rows.
_PG_VALUES_UPSERT = (  # noqa: S608
    "INSERT INTO killmail_values ({names}) SELECT {names} FROM killmail_values_load "
    "ON CONFLICT (killmail_id) DO UPDATE SET {updates}"
).format(
    names=", ".join(_VALUE_COLUMNS),
    updates=", ".join(f"{c} = excluded.{c}" for c in _VALUE_COLUMNS if c != "killmail_id"),
)


def _copy_values(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """PostgreSQL: ``rows`` COPYed into a temporary table, then upserted in one statement
    (a third of the time of an ``executemany``; the JSON column travels as its text)."""
    driver: Any = session.connection().connection.driver_connection
    columns = ", ".join(_VALUE_COLUMNS)
    with driver.cursor() as cursor:
        cursor.execute(_PG_VALUES_LOAD)
        with cursor.copy(f"COPY killmail_values_load ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    [
                        json.dumps(row[c]) if c == "unpriced_type_ids" else row[c]
                        for c in _VALUE_COLUMNS
                    ]
                )
        cursor.execute(_PG_VALUES_UPSERT)
        cursor.execute("DELETE FROM killmail_values_load")


def get_values(session: Session, killmail_ids: Iterable[int]) -> dict[int, KillmailValuation]:
    """Stored values by killmail id (for exports and events)."""
    wanted = sorted(set(killmail_ids))
    out: dict[int, KillmailValuation] = {}
    for start in range(0, len(wanted), READ_CHUNK):
        query = select(VALUES).where(VALUES.c.killmail_id.in_(wanted[start : start + READ_CHUNK]))
        for row in session.execute(query).mappings():
            out[row["killmail_id"]] = KillmailValuation(
                row["killmail_id"],
                row["total"],
                row["destroyed"],
                row["dropped"],
                row["fitted"],
                row["ship"],
                row["price_date"],
                row["method"],
                tuple(row["unpriced_type_ids"]),
            )
    return out


# -- at save time -------------------------------------------------------------------------


class SaveTimeValuer:
    """Values new killmails in the transaction that saves them, when it can without ESI:
    the history reaches their price date and every type's group is cached.

    ``keep_window``: one price window kept from batch to batch, sliding with them (for a
    run that saves many batches in time order, as `killsync import` of daily archives:
    each history row is read about once); else each batch reads its own."""

    def __init__(
        self, region_id: int, *, recheck_s: float = 300.0, keep_window: bool = False
    ) -> None:
        self.region_id = region_id
        self._recheck_s = recheck_s
        self._newest: tuple[float, date | None] = (-1e18, None)
        self._keep_window = keep_window
        self._window: StoredPrices | None = None

    def _newest_day(self, session: Session) -> date | None:
        checked, day = self._newest
        if time.monotonic() - checked > self._recheck_s:
            day = newest_history_day(session, self.region_id)
            self._newest = (time.monotonic(), day)
        return day

    def value_new(
        self, session: Session, batch: Iterable[KillmailRows]
    ) -> dict[int, KillmailValuation]:
        """Value and store what can be valued now; the values by killmail id."""
        newest = self._newest_day(session)
        if newest is None:
            return {}
        ready = [r for r in batch if price_date(r.killmail["killmail_time"]) <= newest]
        if not ready:
            return {}
        wanted = set().union(
            *(type_ids_of(r.killmail["victim_ship_type_id"], r.items) for r in ready)
        )
        types = get_types(session, wanted)
        ready = sorted(  # in time order: how the price window is asked (StoredPrices)
            (r for r in ready if ready_types([r]) <= types.keys()),
            key=lambda r: (r.killmail["killmail_time"], r.killmail_id),
        )
        if not ready:
            return {}
        prices = self._prices(session, ready)
        unit = UnitPrices(prices, types)
        valuations = [
            value_rows(
                r.killmail_id,
                r.killmail["killmail_time"],
                r.killmail["victim_ship_type_id"],
                [item_row(i) for i in r.items],
                unit,
            )
            for r in ready
        ]
        save_values(session, valuations)
        return {v.killmail_id: v for v in valuations}

    def _prices(self, session: Session, ready: Sequence[KillmailRows]) -> StoredPrices:
        if not self._keep_window:
            return _book(session, self.region_id, ready_types(ready), ready)
        if self._window is None:
            spans = stored_day_counts(session, self.region_id)
            self._window = StoredPrices(self.region_id, spans, load_fallback_prices(session))
        days = [price_date(r.killmail["killmail_time"]) for r in ready]
        self._window.load(session, ready_types(ready), min(days), max(days))
        return self._window


def ready_types(batch: Iterable[KillmailRows]) -> set[int]:
    return set().union(*(type_ids_of(r.killmail["victim_ship_type_id"], r.items) for r in batch))


def _book(
    session: Session, region_id: int, types: set[int], rows: Sequence[KillmailRows]
) -> StoredPrices:
    days = [price_date(r.killmail["killmail_time"]) for r in rows]
    spans = stored_day_counts(session, region_id, types)
    book = StoredPrices(region_id, spans, load_fallback_prices(session))
    book.load(session, types, min(days), max(days))
    return book


def _value(
    killmail: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    prices: PriceBook,
    types: Mapping[int, TypeInfo],
) -> KillmailValuation:
    return value_killmail(
        killmail["killmail_id"],
        killmail["killmail_time"],
        killmail["victim_ship_type_id"],
        items,
        prices,
        types,
    )


def item_values_of(session: Session, region_id: int, rows: KillmailRows) -> dict[int, Decimal]:
    """The value of each of one killmail's item rows at its day, from the stored prices
    and the universe cache (what `killsync show` prints beside each item)."""
    types_needed = ready_types([rows])
    prices = _book(session, region_id, types_needed, [rows])
    return item_values(
        rows.killmail["killmail_time"], rows.items, prices, get_types(session, types_needed)
    )


# -- `killsync values` --------------------------------------------------------------------


def compute_values(
    db: Database,
    region_id: int,
    *,
    recompute: bool = False,
    since: datetime | None = None,
    esi: Requester | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> ValuesResult:
    """Value the killmails that need it (all of them with ``recompute``), killed at or
    after ``since`` when given. With ``esi``, types missing from the cache are fetched
    first (else they are valued as plain types)."""
    started, run_at = time.perf_counter(), utcnow()
    with db.session() as session:
        targets = _targets(session, recompute=recompute, since=since)
    if esi is not None and targets:
        fetch_types(db, esi, _all_types(db, [kid for kid, _ in targets]))
    valued = unpriced = fallback = 0
    with db.session() as session:
        settle_day_counts(session, region_id)
    with db.session() as session:
        book = StoredPrices(
            region_id, stored_day_counts(session, region_id), load_fallback_prices(session)
        )
    types: dict[int, TypeInfo] = {}
    asked: set[int] = set()  # types looked up in the cache this run, found or not
    unit = UnitPrices(book, types)
    for start in range(0, len(targets), CHUNK):
        chunk = [kid for kid, _ in targets[start : start + CHUNK]]
        with db.session() as session:
            valuations = _value_chunk(session, chunk, book, unit, (types, asked))
            save_values(session, valuations)
        valued += len(valuations)
        unpriced += sum(1 for v in valuations if v.unpriced_type_ids)
        fallback += sum(1 for v in valuations if v.method.endswith(FALLBACK_SUFFIX))
        if on_chunk:
            on_chunk(len(valuations))
    covered = 0
    if since is None:  # every change up to the run's start is now reflected
        with db.session() as session:
            result = session.execute(delete(CHANGES).where(CHANGES.c.changed_at <= run_at))
            covered = int(getattr(result, "rowcount", 0) or 0)
    return ValuesResult(valued, unpriced, fallback, covered, time.perf_counter() - started)


def _targets(
    session: Session, *, recompute: bool, since: datetime | None
) -> list[tuple[int, datetime]]:
    """``(killmail_id, killmail_time)`` to value, oldest first."""
    base = select(KILLMAILS.c.killmail_id, KILLMAILS.c.killmail_time)
    if since is not None:
        base = base.where(KILLMAILS.c.killmail_time >= since)
    if recompute:
        return [(k, t) for k, t in session.execute(base.order_by(KILLMAILS.c.killmail_time))]
    joined = base.outerjoin(VALUES, VALUES.c.killmail_id == KILLMAILS.c.killmail_id).where(
        or_(VALUES.c.killmail_id.is_(None), VALUES.c.method.not_in(CURRENT_METHODS))
    )
    wanted = {row[0]: row[1] for row in session.execute(joined)}
    for change in session.execute(select(CHANGES)).mappings():
        wanted.update(_changed(session, dict(change), since))
    return sorted(wanted.items(), key=lambda pair: (pair[1], pair[0]))


def _changed(
    session: Session, change: Mapping[str, Any], since: datetime | None
) -> dict[int, datetime]:
    """Killmails whose value a price change may have changed."""
    query = (
        select(KILLMAILS.c.killmail_id, KILLMAILS.c.killmail_time)
        .join(VALUES, VALUES.c.killmail_id == KILLMAILS.c.killmail_id)
        .where(
            VALUES.c.price_date >= change["first_date"],
            VALUES.c.computed_at < change["changed_at"],
        )
    )
    if since is not None:
        query = query.where(KILLMAILS.c.killmail_time >= since)
    if change["type_id"] is not None:
        type_id = change["type_id"]
        has_item = select(ITEMS.c.killmail_id).where(ITEMS.c.item_type_id == type_id)
        query = query.where(
            or_(
                KILLMAILS.c.victim_ship_type_id == type_id,
                KILLMAILS.c.killmail_id.in_(has_item),
            )
        )
    return {row[0]: row[1] for row in session.execute(query)}


def _all_types(db: Database, killmail_ids: list[int]) -> set[int]:
    found: set[int] = set()
    with db.session() as session:
        for start in range(0, len(killmail_ids), READ_CHUNK):
            chunk = killmail_ids[start : start + READ_CHUNK]
            found.update(
                session.scalars(
                    select(KILLMAILS.c.victim_ship_type_id).where(
                        KILLMAILS.c.killmail_id.in_(chunk)
                    )
                )
            )
            found.update(
                session.scalars(
                    select(ITEMS.c.item_type_id).where(ITEMS.c.killmail_id.in_(chunk)).distinct()
                )
            )
    return found


def _value_chunk(
    session: Session,
    chunk: list[int],
    book: StoredPrices,
    unit: UnitPrices,
    cache: tuple[dict[int, TypeInfo], set[int]],
) -> list[KillmailValuation]:
    """Value one chunk; ``cache``: the types found so far, and every type asked for (a
    type not in the cache is not asked again each chunk: it is valued as a plain type)."""
    killmails: list[tuple[int, datetime, int]] = []
    items: dict[int, list[ItemRow]] = defaultdict(list)
    if session.get_bind().dialect.name == "postgresql":
        # Point reads by key. Right after a bulk save, before autovacuum's ANALYZE, the
        # planner takes 500 keys for millions of rows and JIT-compiles each read (30 ms
        # apiece: 27 s of 100,000 killmails' 75 s).
        session.execute(text("SET LOCAL jit = off"))
    for start in range(0, len(chunk), READ_CHUNK):
        ids = chunk[start : start + READ_CHUNK]
        killmails.extend(
            session.execute(
                select(
                    KILLMAILS.c.killmail_id,
                    KILLMAILS.c.killmail_time,
                    KILLMAILS.c.victim_ship_type_id,
                ).where(KILLMAILS.c.killmail_id.in_(ids))
            ).all()
        )
        marks = ", ".join("?" * len(ids))
        query = f"{_ITEMS_SQL} WHERE killmail_id IN ({marks}) ORDER BY killmail_id, position"
        for killmail_id, *row in raw_rows(session, query, ids):
            items[killmail_id].append(tuple(row))
    if not killmails:
        return []
    wanted = {ship for _, _, ship in killmails}
    wanted.update(row[2] for rows in items.values() for row in rows)
    types, asked = cache
    types.update(get_types(session, wanted - asked))
    asked.update(wanted)
    days = [price_date(when) for _, when, _ in killmails]
    book.load(session, wanted, min(days), max(days))
    unit.forget_before(min(days))
    killmails.sort(key=lambda k: (k[1], k[0]))
    return [value_rows(k, when, ship, items.get(k, ()), unit) for k, when, ship in killmails]
