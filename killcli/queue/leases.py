"""Named leases in the database: mutual exclusion across processes and hosts.

A lease is a row ``(name, owner, expires_at)`` in ``leases``. Taking one is a single
atomic statement on both databases::

    INSERT INTO leases (name, owner, expires_at) VALUES (...)
    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE leases.expires_at <= :now OR leases.owner = excluded.owner
    RETURNING name

so a name is taken when it is free, expired, or already ours (taking is re-entrant and
extends the lease); the database's unique index settles races. A name held by a process
of this host that is provably dead (:func:`killcli.holders.holder_is_dead`, checked in
Python on the holders of the names not taken) is then taken over at once with
``UPDATE .. WHERE name = :name AND owner = :dead_owner``, so that race is settled by the
database too. Any other holder that dies lets its lease expire: holders renew every
:data:`HEARTBEAT_S` a lease of :data:`HOLDER_TIMEOUT_S` (:class:`LeaseKeeper`).
Times come from the caller's injected clock (:mod:`killcli.clock`), so hosts should keep NTP time.

Names in use (build them with the helpers below so every component agrees):

* ``character:<id>`` - the worker's per-character sync lease (one sync per character);
* ``queued:<queue>:<id>`` - RabbitMQ only: the character has a job queued or running
  (the queue itself cannot be asked "is character X in you?"); owner is the job id;
* ``running:<queue>:<id>`` - RabbitMQ only: a worker is running that job now (owner: the
  job id too, so a redelivered job takes both back at once, whoever ran it before);
* ``consumer:<queue>:<consumer>`` - a consumer is alive (database queue statistics).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, delete, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.coalesce import Coalescer
from killcli.db import Database
from killcli.db.models import Lease, table_of
from killcli.db.store import dialect_insert
from killcli.errors import KillsyncError
from killcli.holders import holder_is_dead, this_host
from killcli.ticker import Ticker

logger = logging.getLogger(__name__)

LEASES = table_of(Lease)
NAME_CHARS = 200  # leases.name
MAX_SCOPE_CHARS = 120  # leaves room for kind and id in the 200 characters of leases.name
CHUNK = 400  # names per statement, well below every driver's parameter limit

# Holders of leases and running jobs beat every HEARTBEAT_S and hold for HOLDER_TIMEOUT_S
# past their last beat: a holder that stops (killed, frozen, cut off) on another host is
# taken over ~15 s later (one on this host at once, see the module docstring), while a
# live one may miss two or three beats (a database blink, a long write lock) unharmed.
HEARTBEAT_S = 4.0
HOLDER_TIMEOUT_S = 15.0


def lease_scope(queue: str) -> str:
    """A queue name short enough for a lease name (long ones are hashed)."""
    if len(queue) <= MAX_SCOPE_CHARS:
        return queue
    return "sha256-" + hashlib.sha256(queue.encode("utf-8")).hexdigest()[:32]


CHARACTER_LEASE_PREFIX = "character:"
CORPORATION_LEASE_PREFIX = "corporation:"
#: What every lease held while a list is synced starts with.
SYNC_LEASE_PREFIXES = (CHARACTER_LEASE_PREFIX, CORPORATION_LEASE_PREFIX)


def character_lease(character_id: int) -> str:
    return f"{CHARACTER_LEASE_PREFIX}{character_id}"


def corporation_lease(corporation_id: int) -> str:
    """Held while a worker syncs the corporation's list (its directors' buckets are one
    corporation's budget)."""
    return f"{CORPORATION_LEASE_PREFIX}{corporation_id}"


def queued_lease(queue: str, owner_key: str) -> str:
    """A job of the list ``owner_key`` (:attr:`~killcli.queue.jobs.Job.owner_key`) is queued."""
    return f"queued:{lease_scope(queue)}:{owner_key}"


def running_lease(queue: str, owner_key: str) -> str:
    return f"running:{lease_scope(queue)}:{owner_key}"


def consumer_lease(queue: str, consumer_id: str) -> str:
    name = f"consumer:{lease_scope(queue)}:{consumer_id}"
    if len(name) <= NAME_CHARS:
        return name  # only counted by prefix: a long consumer id may be hashed
    return f"consumer:{lease_scope(queue)}:{hashlib.sha256(consumer_id.encode()).hexdigest()}"


def acquire_in(
    session: Session, owners: Mapping[str, str], ttl_s: float, now: datetime
) -> set[str]:
    """Take every free, expired or already owned lease of ``{name: owner}``, and every one
    held by a dead process of this host, in the caller's transaction; returns the names
    taken."""
    names = sorted(owners)  # one lock order for every writer: no deadlocks between them
    expires_at = now + timedelta(seconds=ttl_s)
    taken: set[str] = set()
    for start in range(0, len(names), CHUNK):
        rows = [
            {"name": n, "owner": owners[n], "expires_at": expires_at}
            for n in names[start : start + CHUNK]
        ]
        insert = dialect_insert(session, LEASES)
        stmt = insert.on_conflict_do_update(
            index_elements=[LEASES.c.name],
            set_={"owner": insert.excluded.owner, "expires_at": insert.excluded.expires_at},
            where=or_(LEASES.c.expires_at <= now, LEASES.c.owner == insert.excluded.owner),
        ).returning(LEASES.c.name)
        taken.update(session.scalars(stmt, rows))
    missed = [n for n in names if n not in taken]
    return taken | _take_from_dead(session, {n: owners[n] for n in missed}, expires_at)


def acquire_each(
    session: Session, pairs: Sequence[tuple[str, str]], ttl_s: float, now: datetime
) -> list[bool]:
    """:func:`acquire_in` for a batch of ``(name, owner)`` in which a name may come twice
    (two jobs of one character): its first owner may take it, the others are refused. One
    answer per pair, in order."""
    owners: dict[str, str] = {}
    for name, owner in pairs:
        owners.setdefault(name, owner)
    taken = acquire_in(session, owners, ttl_s, now)
    return [name in taken and owners[name] == owner for name, owner in pairs]


def _take_from_dead(session: Session, owners: Mapping[str, str], expires_at: datetime) -> set[str]:
    """Take over the leases of ``{name: owner}`` whose holder is a dead local process."""
    taken: set[str] = set()
    for name, holder in _local_holders(session, sorted(owners)):
        if not holder_is_dead(holder):
            continue
        # WHERE owner = the dead one: if a rival took it first, the rival keeps it.
        stmt = (
            update(LEASES)
            .where(LEASES.c.name == name, LEASES.c.owner == holder)
            .values(owner=owners[name], expires_at=expires_at)
        )
        if rowcount(session.execute(stmt)):
            taken.add(name)
    return taken


def _local_holders(session: Session, names: list[str]) -> list[tuple[str, str]]:
    """``(name, owner)`` of those names held by owners of this host (a cheap filter: only
    they can be judged dead), in name order."""
    found: list[tuple[str, str]] = []
    local = LEASES.c.owner.startswith(f"{this_host()}:", autoescape=True)
    for start in range(0, len(names), CHUNK):
        rows = session.execute(
            select(LEASES.c.name, LEASES.c.owner)
            .where(LEASES.c.name.in_(names[start : start + CHUNK]), local)
            .order_by(LEASES.c.name)
        )
        found.extend((str(name), str(owner)) for name, owner in rows)
    return found


def renew_in(session: Session, owners: Mapping[str, str], ttl_s: float, now: datetime) -> int:
    """Extend the leases of ``{name: owner}`` still held by that owner; returns how many.

    An expired lease nobody took yet is still ours and is renewed."""
    return _by_pairs(
        session,
        owners,
        lambda where: update(LEASES).where(where).values(expires_at=now + timedelta(seconds=ttl_s)),
    )


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

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self._now = clock.now

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
            return session.scalar(
                select(LEASES.c.owner).where(
                    LEASES.c.name == name, LEASES.c.expires_at > self._now()
                )
            )

    def active(self, prefix: str) -> dict[str, str]:
        """Unexpired leases whose name starts with ``prefix``: ``{name: owner}``."""
        with self._db.session() as session:
            rows = session.execute(
                select(LEASES.c.name, LEASES.c.owner).where(
                    LEASES.c.name.startswith(prefix, autoescape=True),
                    LEASES.c.expires_at > self._now(),
                )
            )
            return {str(name): str(owner) for name, owner in rows}

    def holders(self, prefix: str) -> list[str]:
        """The holders of the unexpired leases whose name starts with ``prefix``."""
        with self._db.session() as session:
            return list(session.scalars(select(LEASES.c.owner).where(self._current(prefix))))

    def count(self, prefix: str) -> int:
        """How many unexpired leases start with ``prefix``."""
        with self._db.session() as session:
            count = session.scalar(
                select(func.count()).select_from(LEASES).where(self._current(prefix))
            )
            return int(count or 0)

    def _current(self, prefix: str) -> ColumnElement[bool]:
        return and_(
            LEASES.c.name.startswith(prefix, autoescape=True), LEASES.c.expires_at > self._now()
        )

    def purge_expired(self) -> int:
        """Delete expired leases (housekeeping; expired rows are harmless otherwise)."""
        with self._db.session() as session:
            stmt = delete(LEASES).where(LEASES.c.expires_at <= self._now())
            return rowcount(session.execute(stmt))


class LeaseKeeper:
    """Holds leases for one process and renews all of them every ``interval_s`` in one
    statement per beat, on one thread (started with the first lease, ended by
    :meth:`close`), however many jobs hold one.

    Jobs that give up a lease at the same time share one transaction
    (:class:`~killcli.coalesce.Coalescer`): a worker running many short syncs at once does
    not pay one per job. (The worker takes its leases with :func:`acquire_in`, in the
    transaction that starts its jobs: :mod:`killcli.sync.quick`.)
    """

    def __init__(
        self, leases: Leases, *, ttl_s: float = HOLDER_TIMEOUT_S, interval_s: float = HEARTBEAT_S
    ) -> None:
        self.leases = leases
        self.ttl_s = ttl_s
        self._interval_s = interval_s
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._ticker: Ticker | None = None
        self._releases: Coalescer[tuple[str, str], None] = Coalescer(self._release_many)

    def acquire(self, name: str, owner: str) -> bool:
        """Take ``name`` for ``owner`` and keep it until :meth:`release`; False if held
        by someone else who is alive (or may be)."""
        if not self.leases.acquire(name, owner, self.ttl_s):
            return False
        self.hold(name, owner)
        return True

    def hold(self, name: str, owner: str) -> None:
        """Keep renewing a lease the caller took (with :func:`acquire_in`) until
        :meth:`release`."""
        with self._lock:
            self._held[name] = owner
            if self._ticker is None:
                self._ticker = Ticker(self._interval_s, self.beat, "killsync-lease-heartbeat")
                self._ticker.start()

    def forget(self, name: str) -> None:
        """Stop renewing ``name``: the caller gives it up in a transaction of its own
        (with :func:`release_in`); :meth:`release` then does nothing."""
        with self._lock:
            self._held.pop(name, None)

    def release(self, name: str, owner: str) -> None:
        """Stop renewing ``name`` and give it up (a failure leaves it to expire); nothing
        to do if it was :meth:`forget`-ten (given up elsewhere) or never held."""
        with self._lock:
            if self._held.get(name) != owner:
                return
            del self._held[name]
        try:
            self._releases.submit((name, owner))
        except KillsyncError:
            logger.warning(
                "could not release lease %s; it expires in %.0f s", name, self.ttl_s, exc_info=True
            )

    def _release_many(self, pairs: Sequence[tuple[str, str]]) -> list[None]:
        # A name twice (its lease lapsed, another job of ours took it over) keeps the last
        # owner: the row names only that one, so the earlier owner's release is a no-op.
        self.leases.release_many(dict(pairs))
        return [None] * len(pairs)

    def beat(self) -> None:
        """Renew every lease held now (the ticker calls this)."""
        with self._lock:
            held = dict(self._held)
        if not held:
            return
        kept = self.leases.renew_many(held, self.ttl_s)
        with self._lock:  # leases released during the beat were not lost
            still = sum(self._held.get(name) == owner for name, owner in held.items())
        if kept < still:
            logger.warning(
                "%d of %d leases were taken over (heartbeats missed their %.0f s)",
                still - kept,
                still,
                self.ttl_s,
            )

    def close(self) -> None:
        """Stop the heartbeat thread (leases still held then simply expire)."""
        with self._lock:
            ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.stop()
