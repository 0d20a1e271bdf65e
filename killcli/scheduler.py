"""`killsync queue`: which characters are due for a sync, and enqueueing them once.

A character is due when it is active, granted the killmail scope, has no job queued or
running, and either was never synced, has pending bodies whose retry time has come, or its
list's cache (``Expires``) has passed plus a per-character jitter: CCP asks clients not to
poll every list at the same second.

The adaptive cadence (:mod:`killcli.cadence`) stretches the last rule for characters whose
newest killmail is old: such a character is due only once its tier's interval has passed
since its last sync (plus the same kind of jitter). The decision is one indexed query over
``characters`` (``newest_killmail_at`` is kept on the row, so no join with the killmails)
and one pass over its rows. ``queue --all`` skips the decision and queues every active
character now.

Tracked corporations are queued by the same rules, on their own rows: an enabled
corporation with a usable director is due when never synced, when pending bodies of its
list are due, or when its list's cache passed (with the cadence of its newest killmail).
One without a usable director costs nothing until a director's roles check is due (or a
director logs in): then one job re-checks them, and syncs if one is usable again.

One run at a time holds a lease, so two cron lines that meet never both enqueue; the broker
refuses a second job for a list anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select, true

from killcli.accounts import KILLMAIL_SCOPE
from killcli.cadence import Cadence, Tier
from killcli.corporations import require_enabled_corporation
from killcli.db import Database
from killcli.db.models import (
    Character,
    CharacterStatus,
    Corporation,
    CorporationDirector,
    CorporationStatus,
    DirectorStatus,
    PendingKillmail,
)
from killcli.db.types import utcnow
from killcli.errors import UsageError
from killcli.holders import this_owner
from killcli.queue.base import Broker, check_priority, queued_ids
from killcli.queue.jobs import Job
from killcli.queue.leases import Leases, lease_scope

JITTER_S = 60  # spread due times over a minute, by character id
RUN_LEASE_TTL_S = 600.0
NEW_PRIORITY = 8
EXPLICIT_PRIORITY = 9
BASE_TIER = "base"  # the label of characters polled at every cache expiry
NO_CADENCE = Cadence()  # every list polled when its cache expires


@dataclass(frozen=True)
class QueuedCharacter:
    """One character a run queued (or would queue), why, and its cadence tier."""

    character_id: int
    name: str
    reason: str  # new | explicit | all | cache expired | cadence | pending retry
    priority: int
    tier: str = BASE_TIER  # "base" or the tier's spec, like "7d=1h"


@dataclass(frozen=True)
class QueuedCorporation:
    """One corporation a run queued (or would queue), why, and its cadence tier."""

    corporation_id: int
    name: str
    reason: str  # new | explicit | all | cache expired | cadence | pending retry | directors check
    priority: int
    tier: str = BASE_TIER


@dataclass(frozen=True)
class QueueRunResult:
    """What one `killsync queue` run selected and published (``published`` and
    ``already_queued`` count characters and corporations)."""

    due: list[QueuedCharacter] = field(default_factory=list)
    published: int = 0
    already_queued: int = 0
    skipped_lock: bool = False
    dry_run: bool = False
    corporations: list[QueuedCorporation] = field(default_factory=list)

    @property
    def lists_due(self) -> int:
        return len(self.due) + len(self.corporations)

    def as_dict(self) -> dict[str, Any]:
        """The ``queue`` JSON payload (``due``: characters and corporations)."""
        return {
            "due": self.lists_due,
            "queued": self.published,
            "already_queued": self.already_queued,
            "dry_run": self.dry_run,
            "characters": [asdict(c) for c in self.due],
            "corporations": [asdict(c) for c in self.corporations],
        }


def jitter(character_id: int, cache_span: timedelta) -> timedelta:
    """A stable per-character delay: up to a minute, at most a fifth of the cache time."""
    spread = min(timedelta(seconds=JITTER_S), max(cache_span, timedelta(0)) / 5)
    return spread * ((character_id * 2654435761) % 1000 / 1000)


def tier_label(tier: Tier | None) -> str:
    return BASE_TIER if tier is None else tier.label


ListOwner = type[Character] | type[Corporation]  # the rows a list's due times live on


def cadence_bands(
    cadence: Cadence, now: datetime, model: ListOwner = Character
) -> list[tuple[Tier | None, ColumnElement[bool]]]:
    """Each tier (None: the base) with the SQL condition that a character (or, ``model``
    Corporation, a corporation) falls in it.

    Ranges on ``newest_killmail_at``, so each band can use its index; the bands do not
    overlap and together hold every row.
    """
    if not cadence.tiers:
        return [(None, true())]
    newest = model.newest_killmail_at
    cutoffs = [now - tier.min_age for tier in cadence.tiers]
    bands: list[tuple[Tier | None, ColumnElement[bool]]] = [(None, newest >= cutoffs[0])]
    for i, tier in enumerate(cadence.tiers):
        if i + 1 < len(cadence.tiers):
            bands.append((tier, and_(newest < cutoffs[i], newest >= cutoffs[i + 1])))
        else:  # the oldest tier also holds characters without any killmail
            bands.append((tier, or_(newest < cutoffs[i], newest.is_(None))))
    return bands


def _list_due(cadence: Cadence, now: datetime, model: ListOwner = Character) -> ColumnElement[bool]:
    """The list cache expired and, in a tier, its interval passed since the last sync."""
    polls = [
        band if tier is None else and_(band, model.last_sync_at <= now - tier.interval)
        for tier, band in cadence_bands(cadence, now, model)
    ]
    return and_(model.list_expires_at <= now, or_(*polls))


def _due_condition(
    cadence: Cadence, now: datetime, model: ListOwner, pending: ColumnElement[bool]
) -> ColumnElement[bool]:
    """Never synced, its list never read, pending bodies due, or its list due."""
    return or_(
        model.last_sync_at.is_(None),
        model.list_expires_at.is_(None),
        pending,
        _list_due(cadence, now, model),
    )


def _syncable() -> Select[int, str, datetime | None, datetime | None, datetime | None]:
    """Active characters with the scope, and whether pending bodies of theirs are due."""
    return select(
        Character.character_id,
        Character.name,
        Character.last_sync_at,
        Character.list_expires_at,
        Character.newest_killmail_at,
    ).where(Character.status == CharacterStatus.ACTIVE, Character.scopes.contains(KILLMAIL_SCOPE))


def _pending_due(now: datetime, model: ListOwner = Character) -> ColumnElement[bool]:
    """The character's (or, ``model`` Corporation, the corporation's) pending bodies are
    due for a retry."""
    # An IN over the pending table's index (not a correlated EXISTS), so the OR of the due
    # query stays a union of index lookups.
    # A row names a character or a corporation, the other null: a NULL in the IN list
    # would make the answer NULL instead of false.
    own, theirs = (
        (Character.character_id, PendingKillmail.character_id)
        if model is Character
        else (Corporation.corporation_id, PendingKillmail.corporation_id)
    )
    return own.in_(
        select(theirs).where(PendingKillmail.next_attempt_at <= now, theirs.is_not(None))
    )


def due_characters(
    db: Database, now: datetime, *, exclude: set[int], cadence: Cadence = NO_CADENCE
) -> list[QueuedCharacter]:
    """Active characters with the scope that are due now (see the module docstring)."""
    pending = _pending_due(now).label("pending_due")
    query = (
        _syncable()
        .add_columns(pending)
        .where(_due_condition(cadence, now, Character, _pending_due(now)))
        .order_by(Character.last_sync_at.is_not(None), Character.last_sync_at)
    )
    with db.session() as session:
        rows = session.execute(query).all()
    due = []
    for row in rows:
        if row.character_id in exclude:
            continue
        tier = cadence.tier_of(row.newest_killmail_at, now)
        reason = _reason(row, row.character_id, tier, now)
        if reason is not None:
            due.append(
                QueuedCharacter(
                    row.character_id,
                    row.name,
                    reason,
                    NEW_PRIORITY if reason == "new" else 0,
                    tier_label(tier),
                )
            )
    return due


def _reason(row: Any, owner_id: int, tier: Tier | None, now: datetime) -> str | None:
    """Why a candidate row is due, or None when its jitter has not passed yet."""
    if row.last_sync_at is None:
        return "new"
    if row.pending_due:
        return "pending retry"
    if row.list_expires_at is None:  # the list was never read: no cadence to apply yet
        return "cache expired"
    if tier is None:
        span = row.list_expires_at - row.last_sync_at
        return "cache expired" if row.list_expires_at + jitter(owner_id, span) <= now else None
    polled_at = row.last_sync_at + tier.interval + jitter(owner_id, tier.interval)
    return "cadence" if polled_at <= now else None


# -- corporations -----------------------------------------------------------------------


def _directors_check_due(now: datetime) -> ColumnElement[bool]:
    """A director of an active character whose roles answer expired (or never came)."""
    expires = CorporationDirector.roles_expires_at
    return Corporation.corporation_id.in_(
        select(CorporationDirector.corporation_id)
        .join(Character, Character.character_id == CorporationDirector.character_id)
        .where(
            Character.status == CharacterStatus.ACTIVE,
            CorporationDirector.status != DirectorStatus.NO_SCOPE,
            CorporationDirector.corporation_id.is_not(None),
            expires.is_(None) | (expires <= now),
        )
    )


CorporationRows = Select[
    int, str | None, CorporationStatus, datetime | None, datetime | None, datetime | None, bool
]


def _corporation_rows(where: ColumnElement[bool], now: datetime) -> CorporationRows:
    return (
        select(
            Corporation.corporation_id,
            Corporation.name,
            Corporation.status,
            Corporation.last_sync_at,
            Corporation.list_expires_at,
            Corporation.newest_killmail_at,
            _pending_due(now, Corporation).label("pending_due"),
        )
        .where(Corporation.enabled.is_(True), where)
        .order_by(Corporation.last_sync_at.is_not(None), Corporation.last_sync_at)
    )


def _corporation_label(row: Any) -> str:
    return row.name or f"corporation {row.corporation_id}"


def due_corporations(
    db: Database, now: datetime, *, exclude: set[int], cadence: Cadence = NO_CADENCE
) -> list[QueuedCorporation]:
    """Enabled corporations due now (see the module docstring)."""
    active = Corporation.status == CorporationStatus.ACTIVE
    query = _corporation_rows(
        or_(
            and_(active, _due_condition(cadence, now, Corporation, _pending_due(now, Corporation))),
            and_(~active, _directors_check_due(now)),
        ),
        now,
    )
    with db.session() as session:
        rows = session.execute(query).all()
    due = []
    for row in rows:
        if row.corporation_id in exclude:
            continue
        tier = cadence.tier_of(row.newest_killmail_at, now)
        if row.status != CorporationStatus.ACTIVE:
            reason: str | None = "directors check"
        else:
            reason = _reason(row, row.corporation_id, tier, now)
        if reason is not None:
            due.append(
                QueuedCorporation(
                    row.corporation_id,
                    _corporation_label(row),
                    reason,
                    NEW_PRIORITY if reason == "new" else 0,
                    tier_label(tier),
                )
            )
    return due


def all_corporations(db: Database, now: datetime, cadence: Cadence) -> list[QueuedCorporation]:
    """Every enabled corporation with a usable director (``queue --all``)."""
    query = _corporation_rows(Corporation.status == CorporationStatus.ACTIVE, now)
    with db.session() as session:
        rows = session.execute(query).all()
    return [
        QueuedCorporation(
            r.corporation_id,
            _corporation_label(r),
            "new" if r.last_sync_at is None else "all",
            NEW_PRIORITY if r.last_sync_at is None else 0,
            tier_label(cadence.tier_of(r.newest_killmail_at, now)),
        )
        for r in rows
    ]


def explicit_corporations(
    db: Database, ids: Sequence[int], priority: int
) -> list[QueuedCorporation]:
    """The corporations named with ``--corporation``; a usage error if one is not tracked
    or is disabled (one without a usable director is queued: its job re-checks them)."""
    with db.session() as session:
        names = {
            cid: require_enabled_corporation(session, cid).name or f"corporation {cid}"
            for cid in ids
        }
    return [QueuedCorporation(cid, names[cid], "explicit", priority) for cid in ids]


def all_characters(db: Database, now: datetime, cadence: Cadence) -> list[QueuedCharacter]:
    """Every active character with the scope (``queue --all``), never-synced ones first."""
    query = _syncable().order_by(Character.last_sync_at.is_not(None), Character.last_sync_at)
    with db.session() as session:
        rows = session.execute(query).all()
    return [
        QueuedCharacter(
            r.character_id,
            r.name,
            "new" if r.last_sync_at is None else "all",
            NEW_PRIORITY if r.last_sync_at is None else 0,
            tier_label(cadence.tier_of(r.newest_killmail_at, now)),
        )
        for r in rows
    ]


def explicit_characters(db: Database, ids: Sequence[int], priority: int) -> list[QueuedCharacter]:
    """The characters named with ``--character``; a usage error if one cannot be synced."""
    with db.session() as session:
        rows = {
            c.character_id: c
            for c in session.scalars(select(Character).where(Character.character_id.in_(list(ids))))
        }
    missing = [cid for cid in ids if cid not in rows]
    if missing:
        raise UsageError(f"character {missing[0]} is not tracked", hint="see `killsync users list`")
    inactive = [rows[cid] for cid in ids if rows[cid].status != CharacterStatus.ACTIVE]
    if inactive:
        c = inactive[0]
        raise UsageError(
            f"{c.name} ({c.character_id}) is {c.status.replace('_', ' ')}",
            hint="log it in again with `killsync login`",
        )
    return [QueuedCharacter(cid, rows[cid].name, "explicit", priority) for cid in ids]


@dataclass(frozen=True)
class _Wanted:
    characters: list[QueuedCharacter]
    corporations: list[QueuedCorporation]


def _wanted(
    db: Database,
    now: datetime,
    queued: tuple[set[int], set[int]],
    *,
    character_ids: Sequence[int],
    corporation_ids: Sequence[int],
    all_active: bool,
    priority: int | None,
    cadence: Cadence,
) -> _Wanted:
    if character_ids or corporation_ids:
        level = check_priority(EXPLICIT_PRIORITY if priority is None else priority)
        return _Wanted(
            explicit_characters(db, character_ids, level) if character_ids else [],
            explicit_corporations(db, corporation_ids, level) if corporation_ids else [],
        )
    if all_active:
        wanted = _Wanted(all_characters(db, now, cadence), all_corporations(db, now, cadence))
    else:
        wanted = _Wanted(
            due_characters(db, now, exclude=queued[0], cadence=cadence),
            due_corporations(db, now, exclude=queued[1], cadence=cadence),
        )
    if priority is None:
        return wanted
    level = check_priority(priority)
    return _Wanted(
        [replace(c, priority=level) for c in wanted.characters],
        [replace(c, priority=level) for c in wanted.corporations],
    )


def run_queue(
    db: Database,
    broker: Broker,
    *,
    character_ids: Sequence[int] = (),
    corporation_ids: Sequence[int] = (),
    full: bool = False,
    priority: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    all_active: bool = False,
    cadence: Cadence = NO_CADENCE,
) -> QueueRunResult:
    """Select what is due and publish one job per list (characters' and corporations'),
    newest first.

    ``cadence`` is the adaptive cadence (the CLI passes ``settings.cadence_plan``; the
    default polls every list when its cache expires). ``all_active`` queues every active
    character and corporation regardless of cadence and list cache; the worker still
    honours ``Expires``. ``character_ids`` and ``corporation_ids`` queue only those.
    """
    if all_active and (character_ids or corporation_ids):
        raise UsageError("--all and --character or --corporation exclude each other")
    now = now or utcnow()
    leases = Leases(db)
    lease_name = f"queue-run:{lease_scope(broker.queue_name)}"
    owner = this_owner()  # a killed `queue` run is taken over at once on this host
    if not dry_run and not leases.acquire(lease_name, owner, RUN_LEASE_TTL_S):
        return QueueRunResult(skipped_lock=True)
    try:
        queued = queued_ids(broker.queued_owner_keys())
        wanted = _wanted(
            db,
            now,
            queued,
            character_ids=character_ids,
            corporation_ids=corporation_ids,
            all_active=all_active,
            priority=priority,
            cadence=cadence,
        )
        characters = [c for c in wanted.characters if c.character_id not in queued[0]]
        corporations = [c for c in wanted.corporations if c.corporation_id not in queued[1]]
        published = 0
        if not dry_run:
            # Corporations first within a priority: their lists are the longest walks.
            jobs = [
                (c.priority, Job.for_corporation(c.corporation_id, full=full)) for c in corporations
            ]
            jobs += [(c.priority, Job.new(c.character_id, full=full)) for c in characters]
            for level in sorted({level for level, _ in jobs}, reverse=True):
                published += broker.publish([j for p, j in jobs if p == level], priority=level)
        total = len(wanted.characters) + len(wanted.corporations)
        return QueueRunResult(
            characters,
            published,
            total - len(characters) - len(corporations),
            dry_run=dry_run,
            corporations=corporations,
        )
    finally:
        if not dry_run:
            leases.release(lease_name, owner)


__all__ = [
    "QueueRunResult",
    "QueuedCharacter",
    "QueuedCorporation",
    "cadence_bands",
    "run_queue",
    "tier_label",
]
