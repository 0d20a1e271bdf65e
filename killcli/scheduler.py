"""`killsync queue`: which characters are due for a sync, and enqueueing them once.

A character is due when it is active, granted the killmail scope, has no job queued or
running, and either was never synced, has pending bodies whose retry time has come, or its
list's cache (``Expires``) has passed plus a per-character jitter: CCP asks clients not to
poll every list at the same second. One run at a time holds a lease, so two cron lines
that meet never both enqueue; the broker refuses a second job for a character anyway.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import exists, or_, select

from killcli.accounts import KILLMAIL_SCOPE
from killcli.db import Database
from killcli.db.models import Character, PendingKillmail
from killcli.db.types import utcnow
from killcli.errors import UsageError
from killcli.queue.base import Broker, check_priority
from killcli.queue.jobs import Job
from killcli.queue.leases import Leases, lease_scope

JITTER_S = 60  # spread due times over a minute, by character id
RUN_LEASE_TTL_S = 600.0
NEW_PRIORITY = 8
EXPLICIT_PRIORITY = 9


@dataclass(frozen=True)
class QueuedCharacter:
    character_id: int
    name: str
    reason: str  # new | explicit | cache expired | pending retry
    priority: int


@dataclass(frozen=True)
class QueueRunResult:
    due: list[QueuedCharacter] = field(default_factory=list)
    published: int = 0
    already_queued: int = 0
    skipped_lock: bool = False
    dry_run: bool = False


def jitter(character_id: int, cache_span: timedelta) -> timedelta:
    """A stable per-character delay: up to a minute, at most a fifth of the cache time."""
    spread = min(timedelta(seconds=JITTER_S), max(cache_span, timedelta(0)) / 5)
    return spread * ((character_id * 2654435761) % 1000 / 1000)


def due_characters(db: Database, now: datetime, *, exclude: set[int]) -> list[QueuedCharacter]:
    """Active characters with the scope whose list cache expired (or never synced)."""
    pending_due = exists().where(PendingKillmail.character_id == Character.character_id,
                                 PendingKillmail.next_attempt_at <= now)
    query = (
        select(Character.character_id, Character.name, Character.last_sync_at,
               Character.list_expires_at, pending_due.label("pending_due"))
        .where(Character.status == "active", Character.scopes.contains(KILLMAIL_SCOPE))
        .where(or_(Character.last_sync_at.is_(None),
                   Character.list_expires_at.is_(None),
                   Character.list_expires_at <= now,
                   pending_due))
        .order_by(Character.last_sync_at.is_not(None), Character.last_sync_at)
    )
    due = []
    with db.session() as session:
        for row in session.execute(query):
            if row.character_id in exclude:
                continue
            if row.last_sync_at is None:
                due.append(QueuedCharacter(row.character_id, row.name, "new", NEW_PRIORITY))
            elif row.pending_due:
                due.append(QueuedCharacter(row.character_id, row.name, "pending retry", 0))
            elif (row.list_expires_at is None
                  or row.list_expires_at + jitter(row.character_id,
                                                  row.list_expires_at - row.last_sync_at) <= now):
                due.append(QueuedCharacter(row.character_id, row.name, "cache expired", 0))
    return due


def explicit_characters(db: Database, ids: Sequence[int], priority: int
                        ) -> list[QueuedCharacter]:
    with db.session() as session:
        rows = {c.character_id: c for c in session.scalars(
            select(Character).where(Character.character_id.in_(list(ids))))}
    missing = [cid for cid in ids if cid not in rows]
    if missing:
        raise UsageError(f"character {missing[0]} is not tracked", hint="see `killsync users list`")
    inactive = [rows[cid] for cid in ids if rows[cid].status != "active"]
    if inactive:
        c = inactive[0]
        raise UsageError(f"{c.name} ({c.character_id}) is {c.status.replace('_', ' ')}",
                         hint="log it in again with `killsync login`")
    return [QueuedCharacter(cid, rows[cid].name, "explicit", priority) for cid in ids]


def run_queue(db: Database, broker: Broker, *, character_ids: Sequence[int] = (),
              full: bool = False, priority: int | None = None, dry_run: bool = False,
              now: datetime | None = None) -> QueueRunResult:
    """Select what is due and publish one job per character, newest first."""
    now = now or utcnow()
    leases = Leases(db)
    lease_name = f"queue-run:{lease_scope(broker.queue_name)}"
    owner = f"{socket.gethostname()}:{os.getpid()}"
    if not dry_run and not leases.acquire(lease_name, owner, RUN_LEASE_TTL_S):
        return QueueRunResult(skipped_lock=True)
    try:
        queued = broker.queued_character_ids()
        if character_ids:
            wanted = explicit_characters(db, character_ids, check_priority(
                EXPLICIT_PRIORITY if priority is None else priority))
        else:
            wanted = due_characters(db, now, exclude=queued)
            if priority is not None:
                wanted = [QueuedCharacter(c.character_id, c.name, c.reason,
                                          check_priority(priority)) for c in wanted]
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


__all__ = ["QueueRunResult", "QueuedCharacter", "run_queue"]
