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

One run at a time holds a lease, so two cron lines that meet never both enqueue; the broker
refuses a second job for a character anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select, true

from killcli.accounts import KILLMAIL_SCOPE
from killcli.cadence import Cadence, Tier
from killcli.db import Database
from killcli.db.models import Character, CharacterStatus, PendingKillmail
from killcli.db.types import utcnow
from killcli.errors import UsageError
from killcli.holders import this_owner
from killcli.queue.base import Broker, check_priority
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
class QueueRunResult:
    """What one `killsync queue` run selected and published."""

    due: list[QueuedCharacter] = field(default_factory=list)
    published: int = 0
    already_queued: int = 0
    skipped_lock: bool = False
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The ``queue`` JSON payload."""
        return {
            "due": len(self.due),
            "queued": self.published,
            "already_queued": self.already_queued,
            "dry_run": self.dry_run,
            "characters": [asdict(c) for c in self.due],
        }


def jitter(character_id: int, cache_span: timedelta) -> timedelta:
    """A stable per-character delay: up to a minute, at most a fifth of the cache time."""
    spread = min(timedelta(seconds=JITTER_S), max(cache_span, timedelta(0)) / 5)
    return spread * ((character_id * 2654435761) % 1000 / 1000)


def tier_label(tier: Tier | None) -> str:
    return BASE_TIER if tier is None else tier.label


def cadence_bands(cadence: Cadence, now: datetime) -> list[tuple[Tier | None, ColumnElement[bool]]]:
    """Each tier (None: the base) with the SQL condition that a character falls in it.

    Ranges on ``newest_killmail_at``, so each band can use its index; the bands do not
    overlap and together hold every character.
    """
    if not cadence.tiers:
        return [(None, true())]
    newest = Character.newest_killmail_at
    cutoffs = [now - tier.min_age for tier in cadence.tiers]
    bands: list[tuple[Tier | None, ColumnElement[bool]]] = [(None, newest >= cutoffs[0])]
    for i, tier in enumerate(cadence.tiers):
        if i + 1 < len(cadence.tiers):
            bands.append((tier, and_(newest < cutoffs[i], newest >= cutoffs[i + 1])))
        else:  # the oldest tier also holds characters without any killmail
            bands.append((tier, or_(newest < cutoffs[i], newest.is_(None))))
    return bands


def _list_due(cadence: Cadence, now: datetime) -> ColumnElement[bool]:
    """The list cache expired and, in a tier, its interval passed since the last sync."""
    polls = [
        band if tier is None else and_(band, Character.last_sync_at <= now - tier.interval)
        for tier, band in cadence_bands(cadence, now)
    ]
    return and_(Character.list_expires_at <= now, or_(*polls))


def _syncable() -> Select[int, str, datetime | None, datetime | None, datetime | None]:
    """Active characters with the scope, and whether pending bodies of theirs are due."""
    return select(
        Character.character_id,
        Character.name,
        Character.last_sync_at,
        Character.list_expires_at,
        Character.newest_killmail_at,
    ).where(Character.status == CharacterStatus.ACTIVE, Character.scopes.contains(KILLMAIL_SCOPE))


def _pending_due(now: datetime) -> ColumnElement[bool]:
    # An IN over the pending table's index (not a correlated EXISTS), so the OR of the due
    # query stays a union of index lookups.
    # A corporation's pending rows (character null) are not a character's: a NULL in the
    # IN list would make the answer NULL instead of false.
    return Character.character_id.in_(
        select(PendingKillmail.character_id).where(
            PendingKillmail.next_attempt_at <= now, PendingKillmail.character_id.is_not(None)
        )
    )


def due_characters(
    db: Database, now: datetime, *, exclude: set[int], cadence: Cadence = NO_CADENCE
) -> list[QueuedCharacter]:
    """Active characters with the scope that are due now (see the module docstring)."""
    pending = _pending_due(now).label("pending_due")
    query = (
        _syncable()
        .add_columns(pending)
        .where(
            or_(
                Character.last_sync_at.is_(None),
                Character.list_expires_at.is_(None),
                _pending_due(now),
                _list_due(cadence, now),
            )
        )
        .order_by(Character.last_sync_at.is_not(None), Character.last_sync_at)
    )
    with db.session() as session:
        rows = session.execute(query).all()
    due = []
    for row in rows:
        if row.character_id in exclude:
            continue
        tier = cadence.tier_of(row.newest_killmail_at, now)
        reason = _reason(row, tier, now)
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


def _reason(row: Any, tier: Tier | None, now: datetime) -> str | None:
    """Why a candidate row is due, or None when its jitter has not passed yet."""
    if row.last_sync_at is None:
        return "new"
    if row.pending_due:
        return "pending retry"
    if row.list_expires_at is None:  # the list was never read: no cadence to apply yet
        return "cache expired"
    if tier is None:
        span = row.list_expires_at - row.last_sync_at
        return (
            "cache expired" if row.list_expires_at + jitter(row.character_id, span) <= now else None
        )
    polled_at = row.last_sync_at + tier.interval + jitter(row.character_id, tier.interval)
    return "cadence" if polled_at <= now else None


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


def _wanted(
    db: Database,
    now: datetime,
    queued: set[int],
    *,
    character_ids: Sequence[int],
    all_active: bool,
    priority: int | None,
    cadence: Cadence,
) -> list[QueuedCharacter]:
    if character_ids:
        return explicit_characters(
            db, character_ids, check_priority(EXPLICIT_PRIORITY if priority is None else priority)
        )
    wanted = (
        all_characters(db, now, cadence)
        if all_active
        else due_characters(db, now, exclude=queued, cadence=cadence)
    )
    if priority is None:
        return wanted
    return [
        QueuedCharacter(c.character_id, c.name, c.reason, check_priority(priority), c.tier)
        for c in wanted
    ]


def run_queue(
    db: Database,
    broker: Broker,
    *,
    character_ids: Sequence[int] = (),
    full: bool = False,
    priority: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    all_active: bool = False,
    cadence: Cadence = NO_CADENCE,
) -> QueueRunResult:
    """Select what is due and publish one job per character, newest first.

    ``cadence`` is the adaptive cadence (the CLI passes ``settings.cadence_plan``; the
    default polls every list when its cache expires). ``all_active`` queues every active
    character regardless of cadence and list cache; the worker still honours ``Expires``.
    """
    if all_active and character_ids:
        raise UsageError("--all and --character exclude each other")
    now = now or utcnow()
    leases = Leases(db)
    lease_name = f"queue-run:{lease_scope(broker.queue_name)}"
    owner = this_owner()  # a killed `queue` run is taken over at once on this host
    if not dry_run and not leases.acquire(lease_name, owner, RUN_LEASE_TTL_S):
        return QueueRunResult(skipped_lock=True)
    try:
        queued = broker.queued_character_ids()
        wanted = _wanted(
            db,
            now,
            queued,
            character_ids=character_ids,
            all_active=all_active,
            priority=priority,
            cadence=cadence,
        )
        fresh = [c for c in wanted if c.character_id not in queued]
        published = 0
        if not dry_run:
            for level in sorted({c.priority for c in fresh}, reverse=True):
                jobs = [Job.new(c.character_id, full=full) for c in fresh if c.priority == level]
                published += broker.publish(jobs, priority=level)
        return QueueRunResult(fresh, published, len(wanted) - len(fresh), dry_run=dry_run)
    finally:
        if not dry_run:
            leases.release(lease_name, owner)


__all__ = ["QueueRunResult", "QueuedCharacter", "cadence_bands", "run_queue", "tier_label"]
