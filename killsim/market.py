"""The market and the static universe around the killmails: prices, groups, regions.

Daily prices are a pure function of ``(region, type, date)`` (an integer hash, no random
stream), so ESI's history route, ``/markets/prices`` and the EVE Ref-style archives
written by :func:`write_history_archives` agree in every process. What a type costs
depends on its kind (``TypeInfo.role``); some types have no history at all (capsules and
about one in eight others), and of those only some are listed by ``/markets/prices``.

``GET /markets/{region_id}/history`` has a limit of its own on ESI (about 300 requests a
minute per IP, set by CCP in 2023, answered with HTTP 500 beyond it and a one-minute
wait): :class:`HistoryLimiter` plays it.
"""

from __future__ import annotations

import bz2
import csv
import math
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType

from killsim.clock import Clock
from killsim.names import TypeInfo

THE_FORGE = 10000002
REGION_IDS = tuple(range(10000001, 10000021))
HISTORY_DAYS = 400  #: ESI answers about 13 months of history
#: When ESI refreshes the history (the ``Expires`` of the route): daily at 11:05 UTC.
REFRESH_AT = time(11, 5)
HISTORY_500 = "Too many requests to the market history endpoint: wait a minute"
#: The columns of EVE Ref's ``market-history-YYYY-MM-DD.csv.bz2`` (MarketHistoryFileBuilder).
ARCHIVE_COLUMNS = (
    "average",
    "date",
    "highest",
    "lowest",
    "order_count",
    "volume",
    "http_last_modified",
    "region_id",
    "type_id",
)

#: Typical price of one unit by kind (ISK).
_BASE_PRICE = MappingProxyType(
    {
        "ship": 45e6,
        "structure": 900e6,
        "weapon": 1.4e6,
        "module": 3.5e6,
        "charge": 180.0,
        "drone": 650e3,
        "container": 75e3,
        "blueprint": 8e6,
        "skin": 30e6,
    }
)

#: group_id -> (name, category_id) for every group of the type table.
GROUPS = MappingProxyType(
    {
        25: ("Frigate", 6),
        26: ("Cruiser", 6),
        27: ("Battleship", 6),
        29: ("Capsule", 6),
        358: ("Heavy Assault Cruiser", 6),
        419: ("Combat Battlecruiser", 6),
        485: ("Dreadnought", 6),
        659: ("Supercarrier", 6),
        831: ("Interceptor", 6),
        963: ("Strategic Cruiser", 6),
        1657: ("Citadel", 65),
        4744: ("Moon Drill", 65),
        53: ("Energy Weapon", 7),
        55: ("Projectile Weapon", 7),
        74: ("Hybrid Weapon", 7),
        508: ("Missile Launcher Torpedo", 7),
        510: ("Missile Launcher Heavy", 7),
        658: ("Cynosural Field Generator", 7),
        4060: ("Precursor Weapon", 7),
        43: ("Shield Recharger", 7),
        46: ("Propulsion Module", 7),
        59: ("Gyrostabilizer", 7),
        60: ("Damage Control", 7),
        61: ("Capacitor Battery", 7),
        62: ("Armor Repair Unit", 7),
        65: ("Stasis Web", 7),
        212: ("Sensor Booster", 7),
        367: ("Ballistic Control system", 7),
        645: ("Drone Damage Modules", 7),
        773: ("Rig Armor", 7),
        774: ("Rig Shield", 7),
        1156: ("Ancillary Shield Booster", 7),
        83: ("Projectile Ammo", 8),
        85: ("Hybrid Charge", 8),
        372: ("Advanced Autocannon Ammo", 8),
        654: ("Heavy Missile", 8),
        916: ("Nanite Repair Paste", 8),
        423: ("Ice Product", 4),
        427: ("Moon Materials", 4),
        100: ("Combat Drone", 18),
        1652: ("Light Fighter", 87),
        340: ("Secure Cargo Container", 2),
        1246: ("Mobile Depot", 22),
        105: ("Frigate Blueprint", 9),
        344: ("Module Blueprint", 9),
        1950: ("Permanent SKIN", 91),
    }
)
CATEGORIES = MappingProxyType(
    {
        2: "Celestial",
        4: "Material",
        6: "Ship",
        7: "Module",
        8: "Charge",
        9: "Blueprint",
        18: "Drone",
        22: "Deployable",
        65: "Structure",
        87: "Fighter",
        91: "SKINs",
    }
)
_MASK = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps): the same in every process."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        state ^= state >> 31
        state = state * 0x94D049BB133111EB & _MASK
        state ^= state >> 29
    return state


def _unit(*values: int) -> float:
    """A number in [0, 1) from integers."""
    return _mix(*values) / 2.0**64


def region_of_constellation(constellation_id: int) -> int:
    """The region of one of the simulator's constellations (Jita's, the first, is in The
    Forge)."""
    return REGION_IDS[(constellation_id - 20_000_000 + 1) % len(REGION_IDS)]


@dataclass(frozen=True)
class HistoryRow:
    """One day of one type in one region, as ESI and EVE Ref carry it."""

    region_id: int
    type_id: int
    day: date
    average: float
    highest: float
    lowest: float
    order_count: int
    volume: int

    def to_json(self) -> dict[str, object]:
        """The row of ``GET /markets/{region_id}/history``."""
        return {
            "average": self.average,
            "date": self.day.isoformat(),
            "highest": self.highest,
            "lowest": self.lowest,
            "order_count": self.order_count,
            "volume": self.volume,
        }


class Market:
    """Prices of a type table, by region and day."""

    def __init__(self, types: Iterable[TypeInfo]) -> None:
        self._roles = {t.type_id: t.role for t in types}

    def has_history(self, type_id: int) -> bool:
        """Whether the type trades at all (capsules never; about 1 in 8 others neither)."""
        role = self._roles.get(type_id)
        return role is not None and role != "capsule" and _unit(type_id, 1) >= 0.125

    def traded_type_ids(self) -> list[int]:
        """The types with history, ascending."""
        return sorted(t for t in self._roles if self.has_history(t))

    def listed_in_prices(self, type_id: int) -> bool:
        """Whether ``/markets/prices`` lists the type: every traded type, and half of the
        others (the fallback's case); capsules never."""
        role = self._roles.get(type_id)
        if role is None or role == "capsule":
            return False
        return self.has_history(type_id) or _unit(type_id, 2) < 0.5

    def base_price(self, type_id: int) -> float:
        """The type's long-run price (from its kind)."""
        role = self._roles.get(type_id, "module")
        return _BASE_PRICE.get(role, 1e6) * (0.4 + 1.2 * _unit(type_id, 3))

    def row(self, region_id: int, type_id: int, day: date) -> HistoryRow:
        """The day's row (whether or not the type has history: see :meth:`has_history`)."""
        return history_row(region_id, type_id, day, self.base_price(type_id))

    def history(self, region_id: int, type_id: int, last_day: date) -> list[HistoryRow]:
        """ESI's answer: ``HISTORY_DAYS`` days up to ``last_day``, oldest first."""
        if not self.has_history(type_id):
            return []
        first = last_day - timedelta(days=HISTORY_DAYS - 1)
        return [
            self.row(region_id, type_id, first + timedelta(days=n)) for n in range(HISTORY_DAYS)
        ]

    def prices(self, last_day: date) -> list[dict[str, object]]:
        """``GET /markets/prices``: a 30-day style average and an adjusted price."""
        rows: list[dict[str, object]] = []
        for type_id in sorted(self._roles):
            if not self.listed_in_prices(type_id):
                continue
            row: dict[str, object] = {
                "adjusted_price": round(self.base_price(type_id) * 0.97, 2),
                "type_id": type_id,
            }
            if _unit(type_id, 4) >= 0.1:  # some types carry no average (esi-issues#1361)
                row["average_price"] = self.row(THE_FORGE, type_id, last_day).average
            rows.append(row)
        return rows


def history_row(region_id: int, type_id: int, day: date, base: float) -> HistoryRow:
    """One deterministic day: a slow wave, daily noise, a region's premium."""
    ordinal = day.toordinal()
    wave = 1 + 0.08 * math.sin(2 * math.pi * (ordinal + 97 * _unit(type_id, 5)) / 29)
    noise = 1 + 0.04 * (_unit(type_id, ordinal, 6) - 0.5)
    premium = 1.0 if region_id == THE_FORGE else 1.03 + 0.1 * _unit(region_id, 7)
    average = round(base * wave * noise * premium, 2)
    spread = 0.01 + 0.04 * _unit(type_id, ordinal, 8)
    return HistoryRow(
        region_id,
        type_id,
        day,
        average,
        round(average * (1 + spread), 2),
        round(average * (1 - spread), 2),
        1 + _mix(type_id, ordinal, 9) % 400,
        1 + _mix(type_id, ordinal, 10) % 50_000,
    )


def last_history_day(now: datetime) -> date:
    """The newest day ESI's history holds: yesterday once today's 11:05 UTC refresh ran."""
    published = now.astimezone(UTC) - timedelta(hours=REFRESH_AT.hour, minutes=REFRESH_AT.minute)
    return published.date() - timedelta(days=1)


def next_refresh(now: datetime) -> datetime:
    """The next 11:05 UTC after ``now`` (the history route's ``Expires``)."""
    now = now.astimezone(UTC)
    today = datetime.combine(now.date(), REFRESH_AT, tzinfo=UTC)
    return today if now < today else today + timedelta(days=1)


class HistoryLimiter:
    """``limit`` market-history requests per ``window_s`` per IP; beyond it every request
    of that IP gets a 500 until a whole window passed (ESI's one-minute wait)."""

    def __init__(self, limit: int, window_s: float, clock: Clock) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self.answered = 0
        self.refused = 0

    def admit(self, ip: str) -> bool:
        """Count a request; False when it must be answered with a 500."""
        now = self._clock.monotonic()
        with self._lock:
            if now < self._blocked_until.get(ip, -math.inf):
                self.refused += 1
                return False
            seen = self._seen.setdefault(ip, deque())
            while seen and seen[0] <= now - self._window_s:
                seen.popleft()
            if len(seen) >= self._limit:
                self._blocked_until[ip] = now + self._window_s
                self.refused += 1
                return False
            seen.append(now)
            self.answered += 1
            return True


# -- EVE Ref-style daily archives ------------------------------------------------------


def archive_name(day: date) -> str:
    """``market-history-YYYY-MM-DD.csv.bz2``."""
    return f"market-history-{day.isoformat()}.csv.bz2"


def archive_lines(rows: Iterable[HistoryRow], last_modified: datetime) -> Iterator[str]:
    """The CSV text of one day's file (RFC 4180, CRLF), header first."""
    yield ",".join(ARCHIVE_COLUMNS) + "\r\n"
    stamp = last_modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for r in rows:
        yield (
            f"{r.average!r},{r.day.isoformat()},{r.highest!r},{r.lowest!r},{r.order_count},"
            f"{r.volume},{stamp},{r.region_id},{r.type_id}\r\n"
        )


def write_history_archives(
    directory: Path,
    market: Market,
    days: Sequence[date],
    *,
    regions: Sequence[int] = (THE_FORGE,),
    type_ids: Sequence[int] | None = None,
    compress_level: int = 9,
) -> list[Path]:
    """Write EVE Ref's layout, ``market-history/YYYY/market-history-YYYY-MM-DD.csv.bz2``,
    one file per day with every region and type (sorted by region, then type). Types
    default to those of ``market`` with history; other ids are priced as modules."""
    types = sorted(type_ids if type_ids is not None else market.traded_type_ids())
    written: list[Path] = []
    for day in days:
        path = directory / "market-history" / f"{day.year}" / archive_name(day)
        path.parent.mkdir(parents=True, exist_ok=True)
        modified = datetime.combine(day + timedelta(days=1), REFRESH_AT, tzinfo=UTC)
        rows = (market.row(region, t, day) for region in sorted(regions) for t in types)
        with bz2.open(path, "wt", encoding="utf-8", newline="", compresslevel=compress_level) as f:
            f.writelines(archive_lines(rows, modified))
        written.append(path)
    return written


def read_archive_rows(path: Path) -> list[dict[str, str]]:
    """The rows of an archive (for tests of the writer)."""
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
