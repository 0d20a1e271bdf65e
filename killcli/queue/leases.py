"""Named leases in the database: mutual exclusion across processes and hosts.

A lease is a row ``(name, owner, expires_at)`` in ``leases``. Taking one is a single
atomic statement on both databases::

    INSERT INTO leases (name, owner, expires_at) VALUES (...)
    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE leases.expires_at <= :now OR leases.owner = excluded.owner
    RETURNING name

so a name is taken when it is free, expired, or already ours (taking is re-entrant and
extends the lease); the database's unique index settles races. A holder that dies simply
lets its lease expire: pick a TTL a few heartbeats long and :meth:`Leases.renew` it.
Times come from the injected clock of the caller, so hosts should keep NTP time.

Names in use (build them with the helpers below so every component agrees):

* ``character:<id>`` - the worker's per-character sync lease (one sync per character);
* ``queued:<queue>:<id>`` - RabbitMQ only: the character has a job queued or running
  (the queue itself cannot be asked "is character X in you?"); owner is the job id;
* ``running:<queue>:<id>`` - RabbitMQ only: a worker is running that job now;
* ``consumer:<queue>:<consumer>`` - a consumer is alive (database queue statistics).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, delete, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from killcli.db import Database
from killcli.db.models import Lease
from killcli.db.store import dialect_insert
from killcli.db.types import utcnow

LEASES: Table = Lease.__table__  # type: ignore[assignment]
MAX_SCOPE_CHARS = 120  # leaves room for kind and id in the 200 characters of leases.name
CHUNK = 400  # names per statement, well below every driver's parameter limit

Now = Callable[[], datetime]


def lease_scope(queue: str) -> str:
    """A queue name short enough for a lease name (long ones are hashed)."""
    if len(queue) <= MAX_SCOPE_CHARS:
        return queue
    return "sha256-" + hashlib.sha256(queue.encode("utf-8")).hexdigest()[:32]


def character_lease(character_id: int) -> str:
    return f"character:{character_id}"


def queued_lease(queue: str, character_id: int) -> str:
    return f"queued:{lease_scope(queue)}:{character_id}"


def running_lease(queue: str, character_id: int) -> str:
    return f"running:{lease_scope(queue)}:{character_id}"


def consumer_lease(queue: str, consumer_id: str) -> str:
    return f"consumer:{lease_scope(queue)}:{consumer_id}"


def acquire_in(
    session: Session, owners: Mapping[str, str], ttl_s: float, now: datetime
) -> set[str]:
    """Take every free, expired or already owned lease of ``{name: owner}`` in the
    caller's transaction; returns the names taken."""
    names = sorted(owners)  # one lock order for every writer: no deadlocks between them
    taken: set[str] = set()
    for start in range(0, len(names), CHUNK):
        rows = [
            {"name": n, "owner": owners[n], "expires_at": now + timedelta(seconds=ttl_s)}
            for n in names[start : start + CHUNK]
        ]
        insert = dialect_insert(session, LEASES)
        stmt = insert.on_conflict_do_update(
            index_elements=[LEASES.c.name],
            set_={"owner": insert.excluded.owner, "expires_at": insert.excluded.expires_at},
            where=or_(LEASES.c.expires_at <= now, LEASES.c.owner == insert.excluded.owner),
        ).returning(LEASES.c.name)
        taken.update(session.scalars(stmt, rows))
    return taken


def renew_in(
    session: Session, owners: Mapping[str, str], ttl_s: float, now: datetime
) -> int:
    """Extend the leases of ``{name: owner}`` still held by that owner; returns how many.

    An expired lease nobody took yet is still ours and is renewed."""
    return _by_pairs(session, owners, lambda where: update(LEASES).where(where).values(
        expires_at=now + timedelta(seconds=ttl_s)))


def release_in(session: Session, owners: Mapping[str, str]) -> int:
    """Drop the leases of ``{name: owner}`` held by that owner; returns how many."""
    return _by_pairs(session, owners, lambda where: delete(LEASES).where(where))


def _by_pairs(session: Session, owners: Mapping[str, str], build: Callable[[Any], Any]) -> int:
    pairs = sorted(owners.items())  # the same lock order as acquire_in
    count = 0
    for start in range(0, len(pairs), CHUNK):
        where = tuple_(LEASES.c.name, LEASES.c.owner).in_(pairs[start : start + CHUNK])
        count += rowcount(session.execute(build(where)))
    return count


def rowcount(result: Any) -> int:
    """How many rows an UPDATE or DELETE touched."""
    return int(cast(CursorResult[Any], result).rowcount)


class Leases:
    """Leases through a :class:`Database`, each call one transaction."""

    def __init__(self, db: Database, *, now: Now = utcnow) -> None:
        self._db = db
        self._now = now

    def acquire(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take ``name`` for ``owner`` for ``ttl_s`` seconds; False if someone else holds it."""
        return name in self.acquire_many({name: owner}, ttl_s)

    def acquire_many(self, owners: Mapping[str, str], ttl_s: float) -> set[str]:
        """Take many leases at once (each name for its owner); returns the names taken."""
        if not owners:
            return set()
        with self._db.session() as session:
            return acquire_in(session, owners, ttl_s, self._now())

    def renew(self, name: str, owner: str, ttl_s: float) -> bool:
        """Extend a lease we hold; False if it was taken over (stop working on it)."""
        return self.renew_many({name: owner}, ttl_s) == 1

    def renew_many(self, owners: Mapping[str, str], ttl_s: float) -> int:
        if not owners:
            return 0
        with self._db.session() as session:
            return renew_in(session, owners, ttl_s, self._now())

    def release(self, name: str, owner: str) -> bool:
        """Give a lease up; False if it was not ours (any more)."""
        return self.release_many({name: owner}) == 1

    def release_many(self, owners: Mapping[str, str]) -> int:
        if not owners:
            return 0
        with self._db.session() as session:
            return release_in(session, owners)

    def holder(self, name: str) -> str | None:
        """The owner of an unexpired lease, or None."""
        with self._db.session() as session:
            return session.scalar(select(LEASES.c.owner).where(
                LEASES.c.name == name, LEASES.c.expires_at > self._now()))

    def active(self, prefix: str) -> dict[str, str]:
        """Unexpired leases whose name starts with ``prefix``: ``{name: owner}``."""
        with self._db.session() as session:
            rows = session.execute(select(LEASES.c.name, LEASES.c.owner).where(
                LEASES.c.name.startswith(prefix, autoescape=True),
                LEASES.c.expires_at > self._now()))
            return {str(name): str(owner) for name, owner in rows}

    def count(self, prefix: str) -> int:
        """How many unexpired leases start with ``prefix``."""
        with self._db.session() as session:
            return int(session.scalar(select(func.count()).select_from(LEASES).where(
                LEASES.c.name.startswith(prefix, autoescape=True),
                LEASES.c.expires_at > self._now())) or 0)

    def purge_expired(self) -> int:
        """Delete expired leases (housekeeping; expired rows are harmless otherwise)."""
        with self._db.session() as session:
            stmt = delete(LEASES).where(LEASES.c.expires_at <= self._now())
            return rowcount(session.execute(stmt))
