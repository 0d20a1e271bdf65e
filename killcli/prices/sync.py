"""`killsync prices sync`: the market history of the types stored killmails need.

One ``GET /markets/{region_id}/history?type_id=`` per type, for the types of stored
killmails (those of the last ``days`` days when given) whose history was never fetched
or whose ``Expires`` (11:05 UTC) passed: ``price_fetches`` keeps when each type was
fetched, so a run that stops (Ctrl-C, ESI down) resumes where it was and a second run
the same day asks for nothing. Capsules and SKINs have fixed prices: never asked for.

CCP limits this route separately, about 300 requests a minute per IP, with HTTP 500s
beyond and a minute's wait: :class:`WindowPacer` keeps the calls under ``per_minute``
in any 60 s (default 240, a fifth below the limit), so a run never reaches it.

``GET /markets/prices`` (cached an hour) is fetched once a run when older than that:
the fallback price of types without history (values priced with it say so).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.db import Database
from killcli.db.models import Item, Killmail, MarketPrice, PriceFetch, table_of
from killcli.db.store import dialect_insert
from killcli.errors import EsiError
from killcli.esi.market import (
    HistoryResult,
    Requester,
    fetch_market_history,
    fetch_market_prices,
)
from killcli.prices.store import (
    MARKET_PRICES,
    HistoryTuple,
    load_averages,
    note_change,
    save_history,
)
from killcli.universe import fetch_types

KILLMAILS = table_of(Killmail)
ITEMS = table_of(Item)
FETCHES = table_of(PriceFetch)
DEFAULT_PER_MINUTE = 240
MAX_PER_MINUTE = 300
PRICES_CACHE_S = 3600
REFRESH_HOUR, REFRESH_MINUTE = 11, 5


class WindowPacer:
    """At most ``limit`` calls in any ``window_s`` seconds: :meth:`wait` sleeps until
    the next call fits."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._sent: deque[float] = deque()
        self.waited_s = 0.0

    def seed(self, ages_s: list[float]) -> None:
        """Count calls made ``ages_s`` seconds ago (by an earlier run) in the window."""
        now = self._clock.monotonic()
        self._sent.extend(sorted(now - age for age in ages_s if age < self._window_s))

    def wait(self) -> None:
        now = self._clock.monotonic()
        while self._sent and self._sent[0] <= now - self._window_s:
            self._sent.popleft()
        if len(self._sent) >= self._limit:
            pause = self._sent[0] + self._window_s - now
            if pause > 0:
                self.waited_s += pause
                self._clock.sleep(pause)
            self._sent.popleft()
        self._sent.append(self._clock.monotonic())


@dataclass(frozen=True)
class PriceSyncResult:
    """What a run did; ``stopped`` says why it ended early (then run it again)."""

    region_id: int
    types_needed: int
    fetched: int
    fresh: int
    without_history: int
    rows: int
    market_prices: int
    paced_s: float
    elapsed_s: float
    stopped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["paced_s"] = round(self.paced_s, 3)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        return out


def next_refresh(now: datetime) -> datetime:
    """The next 11:05 UTC (when ESI refreshes the history), when ESI sent no Expires."""
    now = now.astimezone(UTC)
    today = now.replace(hour=REFRESH_HOUR, minute=REFRESH_MINUTE, second=0, microsecond=0)
    return today if now < today else today + timedelta(days=1)


def needed_types(db: Database, days: int | None, now: datetime) -> set[int]:
    """Hulls and items of the stored killmails (of the last ``days`` days)."""
    hulls = select(KILLMAILS.c.victim_ship_type_id).distinct()
    items = select(ITEMS.c.item_type_id).distinct()
    if days is not None:
        since = now - timedelta(days=days)
        hulls = hulls.where(KILLMAILS.c.killmail_time >= since)
        recent = select(KILLMAILS.c.killmail_id).where(KILLMAILS.c.killmail_time >= since)
        items = items.where(ITEMS.c.killmail_id.in_(recent))
    with db.session() as session:
        return set(session.scalars(hulls)) | set(session.scalars(items))


def sync_prices(
    db: Database,
    esi: Requester,
    region_id: int,
    *,
    days: int | None = None,
    per_minute: int = DEFAULT_PER_MINUTE,
    window_s: float = 60.0,
    clock: Clock = SYSTEM_CLOCK,
    on_type: Callable[[int, int], None] | None = None,
) -> PriceSyncResult:
    """Fetch what is due; ``on_type(done, due)`` after each type."""
    started = time.perf_counter()
    now = clock.now()
    prices = _refresh_market_prices(db, esi, now)
    types = needed_types(db, days, now)
    known = fetch_types(db, esi, types)
    fixed = {t for t, info in known.items() if info.is_capsule or info.is_skin}
    due = _due(db, region_id, types - fixed, now)
    pacer = WindowPacer(per_minute, window_s, clock)
    pacer.seed(_recent_fetches(db, region_id, now, window_s))  # a run just before counts too
    fetched = empty = rows = 0
    stopped = None
    for done, type_id in enumerate(due, start=1):
        pacer.wait()
        try:
            history = fetch_market_history(esi, region_id, type_id)
        except EsiError as exc:
            stopped = f"type {type_id}: {exc}"
            break
        rows += _store(db, history, clock.now())
        fetched += 1
        empty += not history.days
        if on_type:
            on_type(done, len(due))
    return PriceSyncResult(
        region_id,
        len(types),
        fetched,
        len(types) - len(fixed) - len(due),
        empty,
        rows,
        prices,
        pacer.waited_s,
        time.perf_counter() - started,
        stopped,
    )


def _recent_fetches(db: Database, region_id: int, now: datetime, window_s: float) -> list[float]:
    """How long ago the fetches of the last window were (``price_fetches.fetched_at``)."""
    since = now - timedelta(seconds=window_s)
    with db.session() as session:
        times = session.scalars(
            select(FETCHES.c.fetched_at).where(
                FETCHES.c.region_id == region_id, FETCHES.c.fetched_at > since
            )
        ).all()
    return [max(0.0, (now - t).total_seconds()) for t in times]


def _due(db: Database, region_id: int, types: set[int], now: datetime) -> list[int]:
    with db.session() as session:
        fresh = set(
            session.scalars(
                select(FETCHES.c.type_id).where(
                    FETCHES.c.region_id == region_id, FETCHES.c.expires_at > now
                )
            )
        )
    return sorted(types - fresh)


def _store(db: Database, history: HistoryResult, now: datetime) -> int:
    """One type's answer in one transaction: its rows, its fetch, its change."""
    rows: list[HistoryTuple] = [
        (
            history.region_id,
            history.type_id,
            d.day.isoformat(),
            d.average,
            d.highest,
            d.lowest,
            d.volume,
            d.order_count,
        )
        for d in history.days
    ]
    expires = history.expires if history.expires and history.expires > now else next_refresh(now)
    with db.session() as session:
        days = [d.day for d in history.days]
        stored = (
            load_averages(session, history.region_id, [history.type_id], min(days), max(days))[
                history.type_id
            ]
            if days
            else {}
        )
        changed = [d.day for d in history.days if stored.get(d.day) != d.average]
        save_history(session, rows)
        if changed:
            note_change(session, history.region_id, history.type_id, min(changed), now)
        stmt = dialect_insert(session, FETCHES)
        values = {"fetched_at": now, "expires_at": expires, "rows": len(rows)}
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[FETCHES.c.region_id, FETCHES.c.type_id], set_=values
            ),
            [{"region_id": history.region_id, "type_id": history.type_id, **values}],
        )
    return len(rows)


def _refresh_market_prices(db: Database, esi: Requester, now: datetime) -> int:
    """``/markets/prices`` when the stored copy is older than an hour; rows stored now."""
    with db.session() as session:
        last = session.scalar(select(func.max(MARKET_PRICES.c.fetched_at)))
    if last is not None:
        last = last if last.tzinfo else last.replace(tzinfo=UTC)
        if now - last < timedelta(seconds=PRICES_CACHE_S):
            return 0
    found = fetch_market_prices(esi)
    rows = [
        {
            "type_id": r.type_id,
            "average_price": r.average_price,
            "adjusted_price": r.adjusted_price,
            "fetched_at": now,
        }
        for r in found
    ]
    with db.session() as session:
        session.execute(MARKET_PRICES.delete())
        if rows:
            session.execute(table_of(MarketPrice).insert(), rows)
    return len(rows)
