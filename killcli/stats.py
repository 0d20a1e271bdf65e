"""What `killsync stats` reports, computed with a handful of indexed queries.

Counts of killmails use the primary-key index; "last hour/day" use the index on
``killmail_time``; the per-character table aggregates ``character_killmails`` and
``pending_killmails`` once each. Fast on millions of killmails.

The activity of the last 30 days (:func:`activity`) is two grouped queries over the
``killmail_time`` index range: killmails per UTC day, split into **losses** (the victim is
a tracked character, or a tracked corporation) and **kills** (everything else a tracked
list held), and the victim ships most often seen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, String, case, func, or_, select
from sqlalchemy.orm import Session

from killcli.cadence import BASE_INTERVAL, Cadence
from killcli.db import Database
from killcli.db.models import (
    Character,
    CharacterKillmail,
    CharacterStatus,
    Corporation,
    Killmail,
    KillmailValue,
    PendingKillmail,
    SyncRun,
)
from killcli.db.store import count_by
from killcli.db.types import utcnow
from killcli.esi.ledger import egress_totals
from killcli.queue.base import Broker
from killcli.scheduler import NO_CADENCE, cadence_bands, tier_label
from killcli.sync.names import read_names
from killcli.workerstatus import live_workers

DAY = timedelta(days=1)
ACTIVITY_DAYS = 30
TOP_SHIPS = 10
ZERO = Decimal(0)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class DayCount:
    """Kills and losses of one UTC day (``YYYY-MM-DD``), and the ISK destroyed in its
    kills and lost in its losses (the valued ones; ``"0.00"`` when none is valued)."""

    day: str
    kills: int
    losses: int
    isk_destroyed: str = "0.00"
    isk_lost: str = "0.00"


@dataclass(frozen=True)
class ShipCount:
    """A victim ship type: how often it died in kills and in losses."""

    ship_type_id: int
    ship_type_name: str | None
    kills: int
    losses: int


@dataclass(frozen=True)
class Activity:
    """The last ``days`` UTC days (today included, oldest first) and the top victim ships."""

    days: int
    daily: list[DayCount]
    top_ships: list[ShipCount]
    isk_destroyed: str = "0.00"  # over the window, valued killmails only
    isk_lost: str = "0.00"
    valued: int = 0  # killmails of the window with a stored value


def _day(session: Session) -> ColumnElement[str]:
    """A killmail's UTC day as ``YYYY-MM-DD`` (SQLite stores UTC text, PostgreSQL zones)."""
    column = Killmail.killmail_time
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD", type_=String)
    return func.substr(column, 1, 10, type_=String)


def _is_loss() -> ColumnElement[int]:
    tracked = select(Character.character_id)
    corporations = select(Corporation.corporation_id)
    lost = or_(
        Killmail.victim_character_id.in_(tracked),
        Killmail.victim_corporation_id.in_(corporations),
    )
    return case((lost, 1), else_=0)


def activity(db: Database, now: datetime, days: int = ACTIVITY_DAYS) -> Activity:
    """Kills and losses per day over the last ``days`` days, and the top victim ships."""
    first = (now - (days - 1) * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    loss = _is_loss().label("loss")
    ship = Killmail.victim_ship_type_id
    per_day: Counter[tuple[str, int]] = Counter()
    isk: dict[tuple[str, int], Decimal] = {}
    ships: dict[int, list[int]] = {}
    valued = 0
    with db.session() as s:
        day = _day(s).label("day")
        query = (
            select(
                day,
                ship,
                loss,
                func.count(),
                func.sum(KillmailValue.total),
                func.count(KillmailValue.total),
            )
            .select_from(Killmail)
            .outerjoin(KillmailValue, KillmailValue.killmail_id == Killmail.killmail_id)
            .where(Killmail.killmail_time >= first)
            .group_by(day, ship, loss)
        )  # one pass over the window's index range serves both tables and the ISK sums
        for day_text, ship_id, lost, n, total, with_value in s.execute(query):
            per_day[(day_text, lost)] += n
            isk[(day_text, lost)] = isk.get((day_text, lost), ZERO) + Decimal(total or 0)
            valued += with_value
            ships.setdefault(ship_id, [0, 0])[lost] += n
    dates = [(first + i * DAY).strftime("%Y-%m-%d") for i in range(days)]
    daily = [
        DayCount(
            d,
            per_day[(d, 0)],
            per_day[(d, 1)],
            _isk(isk.get((d, 0), ZERO)),
            _isk(isk.get((d, 1), ZERO)),
        )
        for d in dates
    ]
    top = sorted(ships.items(), key=lambda pair: (-sum(pair[1]), pair[0]))[:TOP_SHIPS]
    names = read_names(db, [ship_id for ship_id, _ in top])
    return Activity(
        days,
        daily,
        [ShipCount(ship_id, names.get(ship_id), k, lo) for ship_id, (k, lo) in top],
        _isk(sum((v for (_, lost), v in isk.items() if not lost), ZERO)),
        _isk(sum((v for (_, lost), v in isk.items() if lost), ZERO)),
        valued,
    )


def _isk(amount: Decimal) -> str:
    """An ISK sum with 2 decimals (a string: exact in JSON, like the values' own)."""
    return str(amount.quantize(CENT))


@dataclass(frozen=True)
class CharacterStats:
    character_id: int
    name: str
    status: CharacterStatus
    last_sync_at: datetime | None
    killmails: int
    pending: int
    last_error: str | None


@dataclass(frozen=True)
class CadenceTierStats:
    """Active characters in one cadence tier and the list requests a day it saves."""

    tier: str  # "base" or the spec, like "7d=1h"
    interval_s: int
    characters: int
    requests_per_day: float
    saved_requests_per_day: float


@dataclass(frozen=True)
class CadenceStats:
    """The adaptive cadence's effect: an estimate against polling every list at the base
    interval (ESI's list cache, the cron interval of the examples)."""

    spec: str
    base_interval_s: int
    tiers: list[CadenceTierStats]
    saved_requests_per_day: float


def _per_day(interval: timedelta) -> float:
    return DAY / max(interval, BASE_INTERVAL)


def cadence_stats(db: Database, cadence: Cadence, now: datetime) -> CadenceStats:
    """Active characters per tier (one grouped query) and the list requests they save."""
    bands = cadence_bands(cadence, now)
    band = case(*[(condition, index) for index, (_, condition) in enumerate(bands)], else_=0)
    with db.session() as s:
        query = (
            select(band, func.count())
            .where(Character.status == CharacterStatus.ACTIVE)
            .group_by(band)
        )
        counts: dict[int, int] = dict(s.execute(query).all())
    base = _per_day(BASE_INTERVAL)
    tiers = []
    for index, (tier, _) in enumerate(bands):
        interval = BASE_INTERVAL if tier is None else tier.interval
        n = counts.get(index, 0)
        tiers.append(
            CadenceTierStats(
                tier_label(tier),
                int(interval.total_seconds()),
                n,
                round(n * _per_day(interval), 1),
                round(n * (base - _per_day(interval)), 1),
            )
        )
    return CadenceStats(
        cadence.spec,
        int(BASE_INTERVAL.total_seconds()),
        tiers,
        round(sum(t.saved_requests_per_day for t in tiers), 1),
    )


@dataclass(frozen=True)
class Stats:
    killmails_total: int
    killmails_last_hour: int
    killmails_last_day: int
    characters_by_status: dict[CharacterStatus, int]
    oldest_last_sync_at: datetime | None
    pending_total: int
    last_run: dict[str, Any] | None
    characters: list[CharacterStats] = field(default_factory=list)
    #: tracked corporations: active, no_director, disabled (the operator turned it off)
    corporations_by_status: dict[str, int] = field(default_factory=dict)
    #: the broker's figures (``QueueStats``), dead letters included: each broker counts its
    #: own (the database queue its table, RabbitMQ its dead queue), so none is counted here
    queue: dict[str, Any] = field(default_factory=dict)
    cadence: CadenceStats | None = None
    #: shared per-IP ESI budgets per egress (the ledger, :mod:`killcli.esi.ledger`)
    egress: list[dict[str, Any]] = field(default_factory=list)
    #: kills and losses per day of the last 30 days, and the top victim ships
    activity: Activity | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_stats(
    db: Database, *, per_character_limit: int = 200, cadence: Cadence = NO_CADENCE
) -> Stats:
    """The figures of `killsync stats`; ``cadence`` is the one `killsync queue` applies."""
    now = utcnow()
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(Killmail)) or 0
        hour, day = (
            s.scalar(
                select(func.count())
                .select_from(Killmail)
                .where(Killmail.killmail_time >= now - delta)
            )
            or 0
            for delta in (timedelta(hours=1), timedelta(days=1))
        )
        by_status = dict(
            s.execute(select(Character.status, func.count()).group_by(Character.status)).all()
        )
        oldest = s.scalar(
            select(func.min(Character.last_sync_at)).where(
                Character.status == CharacterStatus.ACTIVE
            )
        )
        pending_total = s.scalar(select(func.count()).select_from(PendingKillmail)) or 0
        last = s.scalars(select(SyncRun).order_by(SyncRun.id.desc()).limit(1)).first()
        corporations = Counter(
            "disabled" if not enabled else str(status)
            for enabled, status in s.execute(select(Corporation.enabled, Corporation.status))
        )
        killmails = count_by(s, CharacterKillmail.character_id)
        pending = count_by(s, PendingKillmail.character_id)
        characters = [
            CharacterStats(
                c.character_id,
                c.name,
                c.status,
                c.last_sync_at,
                killmails.get(c.character_id, 0),
                pending.get(c.character_id, 0),
                c.last_error,
            )
            for c in s.scalars(
                select(Character).order_by(Character.last_sync_at.desc()).limit(per_character_limit)
            )
        ]
    last_run = (
        None
        if last is None
        else {
            "character_id": last.character_id,
            "corporation_id": last.corporation_id,
            "status": last.status,
            "finished_at": last.finished_at,
            "figures": last.figures,
        }
    )
    return Stats(
        total,
        hour,
        day,
        by_status,
        oldest,
        pending_total,
        last_run,
        characters,
        dict(corporations),
        cadence=cadence_stats(db, cadence, now),
        egress=egress_budgets(db),
        activity=activity(db, now),
    )


def egress_budgets(db: Database) -> list[dict[str, Any]]:
    """Each egress's shared budgets: tokens in use by live blocks, holders, 429 or pause."""
    return [
        {
            "egress": t.egress,
            "budget": t.budget,
            "limit": t.limit_tokens,
            "window_s": t.window_s,
            "in_use": t.in_use_tokens,
            "holders": t.holders,
            "blocked_for_s": round(t.blocked_for_s, 1),
        }
        for t in egress_totals(db)
    ]


def stats_report(db: Database, broker: Broker, *, cadence: Cadence = NO_CADENCE) -> dict[str, Any]:
    """The `killsync stats` payload: the database's figures, the broker's queue and the live
    workers. The broker is the one authority for its dead letters; their count is also at
    the top level, where `stats --json` has carried it since 0.1."""
    data = collect_stats(db, cadence=cadence).as_dict()
    queue = broker.stats()
    data["queue"] = asdict(queue)
    data["dead_letters"] = queue.dead_letters
    data["workers"] = live_workers(db)
    return data
