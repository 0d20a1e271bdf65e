"""The ISK value of a killmail, priced at its own day: zKillboard's method
(docs/valuation.md; ``METHOD`` names its version).

Pure functions: the prices come from a :class:`Prices` (a :class:`PriceBook` filled from
the database by :mod:`killcli.values`, or a plain one in tests) and the types' groups and
categories from :mod:`killcli.universe`. Amounts are :class:`~decimal.Decimal`; each total
is rounded to 2 decimals, half away from zero, as PHP's ``round``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from killcli.universe import TypeInfo

#: The method's version, stored with every value: a new version recomputes them all.
METHOD = "zkb-1"
#: ``METHOD`` plus this: some type was priced from ``/markets/prices`` (no history).
FALLBACK_SUFFIX = "+market-prices"
PRICE_DATE_OFFSET = timedelta(seconds=3601)
MAX_DAYS = 34
CENT = Decimal("0.01")
BLUEPRINT_COPY_PRICE = CENT
SKIN_PRICE = CENT
CAPSULE_PRICE = Decimal(10_000)
UNPRICED_PRICE = CENT
BLUEPRINT_COPY = 2  # an item's ``singleton``
FITTED_FLAGS = frozenset(
    [*range(11, 35), *range(92, 99), *range(125, 133), *range(159, 164)]
)  # low, mid, high slots, rigs, subsystems, fighter tubes


def price_date(killmail_time: datetime) -> date:
    """The day a killmail is priced at: its time minus 3601 s (00:30 is the day before)."""
    return (killmail_time - PRICE_DATE_OFFSET).date()


def money(value: Decimal) -> Decimal:
    """Rounded to 2 decimals, half away from zero."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _decimal(value: float) -> Decimal:
    return Decimal(repr(value))


@dataclass(frozen=True)
class DailyAverages:
    """One type's stored daily averages > 0, by ascending day ordinal (for bisection)."""

    days: list[int]
    averages: list[float]

    @classmethod
    def of(cls, history: Mapping[date, float]) -> DailyAverages:
        pairs = sorted((d.toordinal(), a) for d, a in history.items() if a is not None and a > 0)
        return cls([d for d, _ in pairs], [a for _, a in pairs])


def trimmed_average(history: Mapping[date, float], day: date, stored_days: int) -> Decimal | None:
    """A type's price at ``day`` from its daily averages (``history``: at least every
    stored day within reach), or None when it has none > 0.01: see :func:`price_from`."""
    return price_from(DailyAverages.of(history), day, stored_days)


def price_from(averages: DailyAverages, day: date, stored_days: int) -> Decimal | None:
    """A type's price at ``day``.

    Walk back from ``day`` for at most ``stored_days`` calendar days (the number of days
    the type has stored: zKillboard's bound; at least the day itself) collecting up to 34
    averages; sorted, with all 34 drop the 2 lowest and 2 highest, with more than 6 drop
    the 2 highest; average the rest, round to 2 decimals; 0.01 or less is no price;
    otherwise that day's own average caps it. The mean is taken in floating point, as
    zKillboard's PHP does, and rounded from its shortest decimal form (as PHP's ``round``
    does: 1.005 rounds to 1.01).
    """
    target = day.toordinal()
    days = averages.days
    end = bisect_right(days, target)
    start = end - MAX_DAYS
    reach = target - max(1, stored_days) + 1
    if start < 0 or days[start] < reach:  # fewer than 34 days within reach
        start = bisect_left(days, reach, max(start, 0), end)
    found = sorted(averages.averages[start:end])
    count = len(found)
    if count == MAX_DAYS:
        found = found[2:-2]
    elif count > 6:
        found = found[:-2]
    elif not count:
        return None
    mean = sum(found) / len(found)
    # money(_decimal(mean)), inlined: this runs once per (type, day) a run values.
    price = Decimal(repr(mean)).quantize(CENT, rounding=ROUND_HALF_UP)
    if price <= CENT:  # no usable price (zKillboard would try the build cost here)
        return None
    if days[end - 1] == target:  # capped by the day's own average, as zKillboard
        own = averages.averages[end - 1]
        if own <= mean * _CAP_MARGIN + 0.01:  # else it is above the price: no cap
            price = min(price, _decimal(own))
    return price


#: An average above the mean by this factor (and a cent) is above the mean's rounded
#: price whatever the floats' last bits: the cap need not be computed in Decimal.
_CAP_MARGIN = 1.000001


class Prices(Protocol):
    """Where the valuation reads prices."""

    def market_price(self, type_id: int, day: date) -> Decimal | None:
        """The type's price from its history at ``day`` (:func:`trimmed_average`)."""

    def fallback_price(self, type_id: int) -> Decimal | None:
        """The type's ``/markets/prices`` average, for types without history."""


@dataclass
class PriceBook:
    """Prices held in memory: daily averages by type, stored-day counts, fallbacks."""

    history: dict[int, dict[date, float]] = field(default_factory=dict)
    stored_days: dict[int, int] = field(default_factory=dict)
    fallback: dict[int, float] = field(default_factory=dict)
    _sorted: dict[int, DailyAverages] = field(default_factory=dict, repr=False)

    def market_price(self, type_id: int, day: date) -> Decimal | None:
        return self.history_price(type_id, day)

    def history_price(self, type_id: int, day: date) -> Decimal | None:
        """:func:`price_from` the type's held history."""
        held = self._sorted.get(type_id) or self.averages(type_id)
        count = self.stored_days.get(type_id, len(held.days))
        if not held.days or count <= 0:
            return None
        return price_from(held, day, count)

    def averages(self, type_id: int) -> DailyAverages:
        """The type's held history, sorted (built once, until :meth:`forget` is called)."""
        held = self._sorted.get(type_id)
        if held is None:
            held = self._sorted[type_id] = DailyAverages.of(self.history.get(type_id, {}))
        return held

    def forget(self, type_id: int | None = None) -> None:
        """The held history of a type (or of all) changed: sort it again when needed."""
        if type_id is None:
            self._sorted.clear()
        else:
            self._sorted.pop(type_id, None)

    def fallback_price(self, type_id: int) -> Decimal | None:
        value = self.fallback.get(type_id)
        return None if value is None or value <= 0 else money(_decimal(value))


@dataclass(frozen=True)
class KillmailValuation:
    """A killmail's value (the row of ``killmail_values`` without ``computed_at``)."""

    killmail_id: int
    total: Decimal
    destroyed: Decimal
    dropped: Decimal
    fitted: Decimal
    ship: Decimal
    price_date: date
    method: str
    unpriced_type_ids: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        """The ``value`` of events, webhooks and ``export --values`` (amounts as strings
        with 2 decimals: exact in JSON)."""
        return {
            "total": str(self.total),
            "destroyed": str(self.destroyed),
            "dropped": str(self.dropped),
            "fitted": str(self.fitted),
            "ship": str(self.ship),
            "price_date": self.price_date.isoformat(),
            "method": self.method,
            "unpriced_type_ids": list(self.unpriced_type_ids),
        }


#: Where a unit price came from (:meth:`UnitPrices.price`).
MARKET, FALLBACK, UNPRICED = 0, 1, 2
#: An item row as the valuation reads it (``killmail_items``' columns): position, parent
#: position (None at the top), type, flag, singleton, quantity destroyed, dropped.
ItemRow = tuple[int, int | None, int, int, int | None, int | None, int | None]


def item_row(item: Mapping[str, Any]) -> ItemRow:
    """An item row of ``killmail_items`` (a mapping) as an :data:`ItemRow`."""
    parent = item.get("parent_position")
    return (
        int(item["position"]),
        None if parent is None else int(parent),
        int(item["item_type_id"]),
        int(item["flag"]),
        item.get("singleton"),
        item.get("quantity_destroyed"),
        item.get("quantity_dropped"),
    )


class UnitPrices:
    """The price of a type at a day by the rules (SKINs, capsules, the market, the
    fallback, 0.01), with where it came from; remembered, so killmails valued together
    price each (type, day) once. ``types`` may grow between calls."""

    def __init__(self, prices: Prices, types: Mapping[int, TypeInfo]) -> None:
        self._prices = prices
        self._types = types
        self._memo: dict[tuple[int, date], tuple[Decimal, int]] = {}

    def price(self, type_id: int, day: date) -> tuple[Decimal, int]:
        key = (type_id, day)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._price(type_id, day)
        return found

    def forget_before(self, day: date) -> None:
        """Drop what was remembered of days before ``day`` (killmails come in time order)."""
        self._memo = {k: v for k, v in self._memo.items() if k[1] >= day}

    def _price(self, type_id: int, day: date) -> tuple[Decimal, int]:
        info = self._types.get(type_id)
        if info is not None and info.is_skin:
            return SKIN_PRICE, MARKET
        if info is not None and info.is_capsule:
            return CAPSULE_PRICE, MARKET
        price = self._prices.market_price(type_id, day)
        if price is not None:
            return price, MARKET
        price = self._prices.fallback_price(type_id)
        if price is not None:
            return price, FALLBACK
        return UNPRICED_PRICE, UNPRICED


def value_killmail(
    killmail_id: int,
    killmail_time: datetime,
    ship_type_id: int,
    items: Sequence[Mapping[str, Any]],
    prices: Prices,
    types: Mapping[int, TypeInfo],
) -> KillmailValuation:
    """Value one killmail. ``items`` are its item rows (``killmail_items``: ``position``,
    ``parent_position``, ``item_type_id``, ``flag``, ``singleton``, quantities)."""
    rows = [item_row(i) for i in items]
    return value_rows(killmail_id, killmail_time, ship_type_id, rows, UnitPrices(prices, types))


def value_rows(
    killmail_id: int,
    killmail_time: datetime,
    ship_type_id: int,
    rows: Sequence[ItemRow],
    unit: UnitPrices,
) -> KillmailValuation:
    """:func:`value_killmail` of item rows as tuples, with prices shared across killmails."""
    day = price_date(killmail_time)
    used: dict[int, int] = {}  # type -> where its price came from, for the types priced
    ship, used[ship_type_id] = unit.price(ship_type_id, day)
    destroyed, dropped, fitted = ship, Decimal(0), ship
    inside: dict[int, Decimal] = {}  # a top-level row's position -> its contents' value
    top: list[tuple[ItemRow, Decimal, int]] = []
    for row in rows:
        _, parent, type_id, _, singleton, lost, left = row
        quantity = (lost or 0) + (left or 0)
        if singleton == BLUEPRINT_COPY:
            value = BLUEPRINT_COPY_PRICE * quantity
        else:
            price, used[type_id] = unit.price(type_id, day)
            value = price * quantity
        if parent is None:
            top.append((row, value, quantity))
        else:
            inside[parent] = inside.get(parent, Decimal(0)) + value
    for (position, _, type_id, flag, _, lost, left), own, quantity in top:
        value = own + inside.get(position, Decimal(0))
        if lost:
            destroyed += value
        if left:
            dropped += value
        if flag in FITTED_FLAGS:  # the plain price: no blueprint-copy rule here
            price, used[type_id] = unit.price(type_id, day)
            fitted += price * quantity
    destroyed, dropped = money(destroyed), money(dropped)
    return KillmailValuation(
        killmail_id,
        destroyed + dropped,
        destroyed,
        dropped,
        money(fitted),
        money(ship),
        day,
        METHOD + (FALLBACK_SUFFIX if FALLBACK in used.values() else ""),
        tuple(sorted(t for t, source in used.items() if source == UNPRICED)),
    )


def item_values(
    killmail_time: datetime,
    items: Sequence[Mapping[str, Any]],
    prices: Prices,
    types: Mapping[int, TypeInfo],
) -> dict[int, Decimal]:
    """Each item row's own value by ``position`` (unit price x quantity, by the rules
    of :func:`value_killmail`; a container's contents are rows of their own), for people
    reading one killmail (`killsync show`)."""
    unit, day = UnitPrices(prices, types), price_date(killmail_time)
    out: dict[int, Decimal] = {}
    for position, _, type_id, _, singleton, lost, left in map(item_row, items):
        price = BLUEPRINT_COPY_PRICE if singleton == BLUEPRINT_COPY else unit.price(type_id, day)[0]
        out[position] = money(price * ((lost or 0) + (left or 0)))
    return out


def type_ids_of(ship_type_id: int, items: Iterable[Mapping[str, Any]]) -> set[int]:
    """Every type a killmail's value needs: the hull and every item's."""
    return {ship_type_id, *(int(i["item_type_id"]) for i in items)}
