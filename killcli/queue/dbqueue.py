"""The database job queue: the embedded default, on SQLite or PostgreSQL.

One row in ``jobs`` per job that is queued, delayed or running; acknowledging deletes it,
burying moves it to ``dead_letters``. So "the character (or corporation) has a job queued
or running" is simply "it has a row in ``jobs``".

* **Order**: higher ``priority`` first, then earlier ``available_at`` (then insertion).
* **Claim**: PostgreSQL ``SELECT .. FOR UPDATE SKIP LOCKED`` then ``UPDATE`` in one
  transaction, so concurrent workers never block on or take the same row; SQLite runs the
  same statements under ``BEGIN IMMEDIATE``, which serializes writers.
* **Visibility timeout**: a claim sets ``locked_until = now + visibility_timeout_s`` and a
  fresh ``locked_by`` token (:func:`killcli.holders.this_owner` of the consumer plus a
  random part); one heartbeat statement per consumer extends all its running jobs. A
  worker that is SIGKILLed stops heartbeating and its jobs are claimable again after the
  timeout (:data:`~killcli.queue.leases.HOLDER_TIMEOUT_S`), or at once when a consumer on
  its host sees that its process is gone (:meth:`DatabaseBroker.reclaim_dead`, at start and
  on every heartbeat). Settling checks the token, so a worker that lost its claim cannot
  delete a job another one holds.
* **Fair share**: with other live consumers on the queue, a claim takes no more than
  this consumer's share of the open jobs (ready or running, over the live consumers,
  rounded up, less what it holds), so the first worker to poll after a `queue` does not
  take every job of a small round while the others idle: jobs spread over the workers and
  with them over their egresses' budgets. A claim held back by it says so (``deferred``):
  a draining consumer then polls again instead of calling the queue empty.
* **Attempts**: ``jobs.attempt`` counts claims, so a job that keeps killing its workers is
  counted too and buried once it was lost more than ``max_attempts`` times.
* **Delays**: a retry clears the lock and sets ``available_at = now + backoff``.
* **One job per list**: publishers of a queue are serialized (a transaction-scoped
  ``pg_advisory_xact_lock`` on PostgreSQL, the ``BEGIN IMMEDIATE`` write lock on SQLite);
  inside that, inserting only lists without a row is atomic; the unique constraints on
  ``jobs (queue, character_id)`` and ``jobs (queue, corporation_id)`` back it up (the
  insert is ``ON CONFLICT DO NOTHING``).

All times come from the injected clock (``clock``, :mod:`killcli.clock`): hosts sharing a
database need NTP time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Select, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.config import DEFAULT_QUEUE_NAME, new_token
from killcli.db import Database
from killcli.db.models import DeadLetter, table_of
from killcli.db.models import Job as JobRow
from killcli.db.store import insert_ignore
from killcli.errors import DatabaseError, QueueUnavailable, SchemaOutOfDate
from killcli.holders import holder_is_dead, this_host, this_owner
from killcli.queue.base import (
    Broker,
    ConsumeResult,
    DeadLetterInfo,
    Handler,
    Outcome,
    OutcomeKind,
    QueueStats,
    RequeueResult,
    check_priority,
    unique_by_owner,
)
from killcli.queue.dbconsumer import DatabaseConsumer
from killcli.queue.jobs import Job, PoisonMessage, from_dict, owner_key, peek_ids
from killcli.queue.leases import (
    HEARTBEAT_S,
    HOLDER_TIMEOUT_S,
    Leases,
    consumer_lease,
    lease_scope,
    rowcount,
)
from killcli.queue.policy import RetryPolicy, new_rng

logger = logging.getLogger(__name__)

JOBS = table_of(JobRow)
DEAD = table_of(DeadLetter)
CHUNK = 500


@dataclass(frozen=True)
class Delivery:
    """A claimed job; settle it with the token it was claimed under."""

    job: Job
    row_id: int
    token: str
    priority: int

    @property
    def tries(self) -> int:
        """Which try this is (1 for the first)."""
        return self.job.attempt + 1


class Claimed(NamedTuple):
    """What one :meth:`DatabaseBroker.claim` took."""

    deliveries: list[Delivery]
    poisoned: int  # poison buried on the way
    deferred: bool = False  # ready jobs left for the other consumers (the fair share)


def default_consumer_id() -> str:
    """This process's owner (:func:`~killcli.holders.this_owner`) with a random suffix,
    to tell consumers apart in locks and statistics and their dead apart from the living."""
    return this_owner(new_token()[:6])


class DatabaseBroker(Broker):
    """The job queue in the ``jobs`` and ``dead_letters`` tables.

    ``visibility_timeout_s`` bounds how long a crashed worker's job stays invisible;
    heartbeats every ``heartbeat_s`` (default :data:`HEARTBEAT_S`, at most a quarter of
    the timeout) keep a long job claimed.
    Idle consumers poll every ``poll_interval_s``.
    """

    def __init__(
        self,
        db: Database,
        *,
        queue_name: str = DEFAULT_QUEUE_NAME,
        policy: RetryPolicy | None = None,
        visibility_timeout_s: float = HOLDER_TIMEOUT_S,
        heartbeat_s: float | None = None,
        poll_interval_s: float = 1.0,
        outage_timeout_s: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        consumer_id: str | None = None,
    ) -> None:
        self.db = db
        self.queue_name = queue_name
        self.policy = policy or RetryPolicy()
        self.visibility_timeout_s = visibility_timeout_s
        self.heartbeat_s = heartbeat_s or min(HEARTBEAT_S, visibility_timeout_s / 4)
        self.poll_interval_s = poll_interval_s
        self.outage_timeout_s = outage_timeout_s
        self.now = clock.now
        self.rng = rng or new_rng()
        self.consumer_id = consumer_id or default_consumer_id()
        self.leases = Leases(db, clock=clock)

    # -- publishing ------------------------------------------------------------------

    def publish(self, jobs: Sequence[Job], *, priority: int = 0) -> int:
        check_priority(priority)
        fresh = unique_by_owner(jobs)
        if not fresh:
            return 0
        now = self.now()
        with self._session() as session:
            self._serialize_publishers(session)
            taken = self._queued_among(session, fresh.values())
            rows = [self._row(job, priority, now) for key, job in fresh.items() if key not in taken]
            if not rows:
                return 0
            stmt = insert_ignore(session, JOBS).returning(JOBS.c.id)
            return len(session.scalars(stmt, rows).all())

    def _row(self, job: Job, priority: int, now: datetime) -> dict[str, Any]:
        return {
            "job_id": job.job_id,
            "queue": self.queue_name,
            "character_id": job.character_id,
            "corporation_id": job.corporation_id,
            "payload": job.to_dict(),
            "priority": priority,
            "attempt": job.attempt,
            "available_at": now,
            "created_at": now,
        }

    def _serialize_publishers(self, session: Session) -> None:
        # SQLite already holds the database write lock (BEGIN IMMEDIATE). On PostgreSQL
        # READ COMMITTED, "check then insert" races without it; the lock ends with the
        # transaction, so a crashed publisher never leaves it behind.
        if self.db.dialect == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(self._lock_key())))

    def _lock_key(self) -> int:
        digest = hashlib.blake2b(f"killsync.jobs:{self.queue_name}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    def _queued_among(self, session: Session, jobs: Iterable[Job]) -> set[str]:
        """The owner keys of ``jobs`` that have a row in this queue."""
        wanted = list(jobs)
        found: set[str] = set()
        for column, ids, key in (
            (
                JOBS.c.character_id,
                [j.character_id for j in wanted if j.character_id is not None],
                lambda i: owner_key(character_id=i),
            ),
            (
                JOBS.c.corporation_id,
                [j.corporation_id for j in wanted if j.corporation_id is not None],
                lambda i: owner_key(corporation_id=i),
            ),
        ):
            for start in range(0, len(ids), CHUNK):
                found.update(
                    map(
                        key,
                        session.scalars(
                            select(column).where(
                                JOBS.c.queue == self.queue_name,
                                column.in_(ids[start : start + CHUNK]),
                            )
                        ),
                    )
                )
        return found

    # -- claiming and settling (the pull API under consume) -----------------------------

    def reserve(self, limit: int = 1) -> list[Delivery]:
        """Claim up to ``limit`` ready jobs (poison found on the way is buried)."""
        return self.claim(limit)[0]

    def claim(self, limit: int, *, held: int = 0, consumers: int = 1) -> Claimed:
        """Claim up to ``limit`` ready jobs, no more than this consumer's fair share when
        ``consumers`` (live, itself included) share the queue and it ``held`` some."""
        now = self.now()
        token = f"{self.consumer_id}/{new_token()[:10]}"
        with self._session() as session:
            if consumers > 1:
                limit = min(limit, self._share(session, now, limit + held, consumers) - held)
                if limit <= 0:
                    deferred = session.scalar(self._ready_ids(now).limit(1)) is not None
                    return Claimed([], 0, deferred)
            ids = list(
                session.scalars(self._ready_ids(now).limit(limit).with_for_update(skip_locked=True))
            )
            if not ids:
                return Claimed([], 0)
            rows = session.execute(
                update(JOBS)
                .where(JOBS.c.id.in_(ids))
                .values(
                    locked_by=token,
                    attempt=JOBS.c.attempt + 1,
                    locked_until=now + timedelta(seconds=self.visibility_timeout_s),
                )
                .returning(
                    JOBS.c.id,
                    JOBS.c.job_id,
                    JOBS.c.character_id,
                    JOBS.c.payload,
                    JOBS.c.attempt,
                    JOBS.c.priority,
                    JOBS.c.last_error,
                )
            ).all()
            deliveries = [d for row in rows if (d := self._delivery(session, row, token, now))]
        deliveries.sort(key=lambda d: (-d.priority, d.row_id))
        return Claimed(deliveries, len(rows) - len(deliveries))

    def _share(self, session: Session, now: datetime, wanted: int, consumers: int) -> int:
        """A consumer's share of the open jobs (ready, or running anywhere), rounded up;
        counted only as far as it could bind (``wanted`` each)."""
        open_jobs = (
            select(JOBS.c.id)
            .where(
                JOBS.c.queue == self.queue_name,
                or_(JOBS.c.available_at <= now, JOBS.c.locked_until > now),
            )
            .limit(wanted * consumers)
            .subquery()
        )
        count = int(session.scalar(select(func.count()).select_from(open_jobs)) or 0)
        return -(-count // consumers)

    def _ready_ids(self, now: datetime) -> Select[tuple[int]]:
        return (
            select(JOBS.c.id)
            .where(
                JOBS.c.queue == self.queue_name,
                JOBS.c.available_at <= now,
                or_(JOBS.c.locked_until.is_(None), JOBS.c.locked_until <= now),
            )
            .order_by(JOBS.c.priority.desc(), JOBS.c.available_at, JOBS.c.id)
        )

    def _delivery(self, session: Session, row: Any, token: str, now: datetime) -> Delivery | None:
        try:
            job = replace(from_dict(row.payload), attempt=row.attempt - 1)
        except PoisonMessage as exc:
            logger.warning("job row %s is poison: %s", row.id, exc)
            self._bury_row(session, row, f"poison: {exc}", row.attempt, now)
            return None
        if row.attempt > self.policy.max_attempts:
            # Claimed max_attempts times and never settled: it keeps killing workers.
            reason = (
                f"lost by {row.attempt - 1} workers (no ack within the visibility "
                f"timeout); last error: {row.last_error or 'none'}"
            )
            self._bury_row(session, row, reason, row.attempt - 1, now)
            return None
        return Delivery(job, row.id, token, row.priority)

    def ack(self, delivery: Delivery) -> bool:
        """Delete a finished job; False if the claim was lost (the job runs again)."""
        with self._session() as session:
            return bool(rowcount(session.execute(delete(JOBS).where(*self._mine(delivery)))))

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """:meth:`ack` of many jobs in one transaction (one statement per :data:`CHUNK`)."""
        claimed = [(d.row_id, d.token) for d in deliveries]
        gone: set[int] = set()
        with self._session() as session:
            for start in range(0, len(claimed), CHUNK):
                gone.update(
                    session.scalars(
                        delete(JOBS)
                        .where(
                            tuple_(JOBS.c.id, JOBS.c.locked_by).in_(claimed[start : start + CHUNK])
                        )
                        .returning(JOBS.c.id)
                    )
                )
        return [d.row_id in gone for d in deliveries]

    def retry(self, delivery: Delivery, reason: str, delay_s: float) -> bool:
        """Release a failed job, available again after ``delay_s``."""
        now = self.now()
        with self._session() as session:
            return bool(
                rowcount(
                    session.execute(
                        update(JOBS)
                        .where(*self._mine(delivery))
                        .values(
                            available_at=now + timedelta(seconds=delay_s),
                            locked_by=None,
                            locked_until=None,
                            last_error=reason,
                        )
                    )
                )
            )

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Move a job to the dead letters with the reason."""
        with self._session() as session:
            row = session.execute(
                delete(JOBS)
                .where(*self._mine(delivery))
                .returning(JOBS.c.job_id, JOBS.c.character_id, JOBS.c.payload)
            ).first()
            if row is None:
                return False
            payload = delivery.job.to_dict()
            session.execute(
                insert(DEAD).values(
                    job_id=row.job_id,
                    queue=self.queue_name,
                    character_id=row.character_id,
                    payload=payload,
                    raw=json.dumps(payload),
                    reason=reason,
                    attempts=delivery.tries,
                    failed_at=self.now(),
                )
            )
            return True

    def settle(self, delivery: Delivery, outcome: Outcome) -> bool:
        """Apply a settled :class:`Outcome`; False if the claim was lost meanwhile."""
        if outcome.kind is OutcomeKind.DONE:
            return self.ack(delivery)
        if outcome.kind is OutcomeKind.RETRY:
            return self.retry(delivery, outcome.reason, outcome.delay_s or 0.0)
        return self.dead_letter(delivery, outcome.reason)

    def unclaim(self, deliveries: Sequence[Delivery]) -> int:
        """Give back claimed jobs that were never started (a consumer's prefetch when it
        stops): claimable again at once, their attempt not counted; returns how many."""
        return self._update_claims(
            deliveries, locked_by=None, locked_until=None, attempt=JOBS.c.attempt - 1
        )

    def extend(self, deliveries: Iterable[Delivery]) -> int:
        """Heartbeat: push the visibility timeout of running jobs forward, in one statement
        per :data:`CHUNK` jobs; returns how many are still ours."""
        until = self.now() + timedelta(seconds=self.visibility_timeout_s)
        return self._update_claims(deliveries, locked_until=until)

    def _update_claims(self, deliveries: Iterable[Delivery], **values: Any) -> int:
        """Set ``values`` on the jobs of ``deliveries`` still claimed by them, one statement
        per :data:`CHUNK`; returns how many."""
        claimed = sorted((d.row_id, d.token) for d in deliveries)
        if not claimed:
            return 0
        with self._session() as session:
            return sum(
                rowcount(
                    session.execute(
                        update(JOBS)
                        .where(
                            tuple_(JOBS.c.id, JOBS.c.locked_by).in_(claimed[start : start + CHUNK])
                        )
                        .values(**values)
                    )
                )
                for start in range(0, len(claimed), CHUNK)
            )

    def reclaim_dead(self) -> int:
        """Make the running jobs of dead processes of this host claimable now; returns how
        many. Their tokens name their consumer's process (see :mod:`killcli.holders`)."""
        now = self.now()
        with self._session() as session:
            tokens = session.scalars(
                select(JOBS.c.locked_by)
                .distinct()
                .where(
                    JOBS.c.queue == self.queue_name,
                    JOBS.c.locked_until > now,
                    JOBS.c.locked_by.startswith(f"{this_host()}:", autoescape=True),
                )
            ).all()
            dead = sorted(t for t in tokens if t is not None and holder_is_dead(t))
            if not dead:
                return 0
            # WHERE locked_by = the dead token: a job claimed again meanwhile is left alone.
            count = rowcount(
                session.execute(
                    update(JOBS)
                    .where(
                        JOBS.c.queue == self.queue_name,
                        JOBS.c.locked_by.in_(dead),
                        JOBS.c.locked_until > now,
                    )
                    .values(locked_until=now)
                )
            )
        logger.warning(
            "%d jobs of %d dead consumers on this host are claimable again", count, len(dead)
        )
        return count

    def _mine(self, delivery: Delivery) -> tuple[Any, ...]:
        return JOBS.c.id == delivery.row_id, JOBS.c.locked_by == delivery.token

    def _bury_row(
        self, session: Session, row: Any, reason: str, attempts: int, now: datetime
    ) -> None:
        payload = row.payload if isinstance(row.payload, dict) else None
        session.execute(
            insert(DEAD).values(
                job_id=row.job_id,
                queue=self.queue_name,
                character_id=row.character_id,
                payload=payload,
                raw=json.dumps(row.payload),
                reason=reason,
                attempts=attempts,
                failed_at=now,
            )
        )
        session.execute(delete(JOBS).where(JOBS.c.id == row.id))

    # -- consuming -------------------------------------------------------------------

    def consume(
        self,
        handler: Handler,
        *,
        concurrency: int = 1,
        stop: threading.Event | None = None,
        drain: bool = False,
        max_jobs: int | None = None,
    ) -> ConsumeResult:
        return DatabaseConsumer(
            self, handler, concurrency=concurrency, stop=stop, drain=drain, max_jobs=max_jobs
        ).run()

    # -- operators -------------------------------------------------------------------

    def stats(self) -> QueueStats:
        now = self.now()
        running = JOBS.c.locked_until > now
        idle = or_(JOBS.c.locked_until.is_(None), JOBS.c.locked_until <= now)
        with self._session() as session:
            ready, delayed, busy = session.execute(
                select(
                    func.count().filter(idle, JOBS.c.available_at <= now),
                    func.count().filter(idle, JOBS.c.available_at > now),
                    func.count().filter(running),
                ).where(JOBS.c.queue == self.queue_name)
            ).one()
            dead = session.scalar(
                select(func.count()).select_from(DEAD).where(DEAD.c.queue == self.queue_name)
            )
        consumers = self._live_consumer_count()
        return QueueStats(
            ready=ready,
            delayed=delayed,
            running=busy,
            dead_letters=int(dead or 0),
            consumers=consumers,
        )

    def dead_letters(self, limit: int = 50) -> list[DeadLetterInfo]:
        with self._session() as session:
            rows = session.execute(
                select(DEAD).where(DEAD.c.queue == self.queue_name).order_by(DEAD.c.id).limit(limit)
            ).all()
        return [
            DeadLetterInfo(
                job_id=r.job_id,
                character_id=r.character_id,
                reason=r.reason,
                attempts=r.attempts,
                failed_at=r.failed_at,
                raw=r.raw or "",
                corporation_id=peek_ids(r.raw or "").corporation_id,
            )
            for r in rows
        ]

    def purge_dead_letters(self) -> int:
        with self._session() as session:
            return rowcount(session.execute(delete(DEAD).where(DEAD.c.queue == self.queue_name)))

    def requeue_dead_letters(self) -> RequeueResult:
        now = self.now()
        with self._session() as session:
            self._serialize_publishers(session)
            dead = session.execute(
                select(DEAD.c.id, DEAD.c.payload)
                .where(DEAD.c.queue == self.queue_name)
                .order_by(DEAD.c.id)
            ).all()
            jobs: dict[str, Job] = {}
            handled: list[int] = []
            for row_id, payload in dead:
                try:
                    job = replace(from_dict(payload), attempt=0)
                except PoisonMessage:
                    continue  # nothing to requeue: it stays for an operator to read
                jobs.setdefault(job.owner_key, job)
                handled.append(row_id)
            queued = self._queued_among(session, jobs.values())
            rows = [self._row(job, 0, now) for key, job in jobs.items() if key not in queued]
            if rows:
                session.execute(insert_ignore(session, JOBS), rows)
            for start in range(0, len(handled), CHUNK):
                session.execute(delete(DEAD).where(DEAD.c.id.in_(handled[start : start + CHUNK])))
        return RequeueResult(
            requeued=len(rows), dropped=len(handled) - len(rows), kept=len(dead) - len(handled)
        )

    def queued_owner_keys(self) -> set[str]:
        with self._session() as session:
            rows = session.execute(
                select(JOBS.c.character_id, JOBS.c.corporation_id).where(
                    JOBS.c.queue == self.queue_name
                )
            ).all()
        return {
            owner_key(character_id=r.character_id, corporation_id=r.corporation_id) for r in rows
        }

    def register_consumer(self, ttl_s: float) -> bool:
        """Announce (or keep announcing) this consumer for :meth:`stats`."""
        name = consumer_lease(self.queue_name, self.consumer_id)
        return self.leases.acquire(name, self.consumer_id, ttl_s)

    @property
    def _consumer_prefix(self) -> str:
        return f"consumer:{lease_scope(self.queue_name)}:"

    def live_consumers(self) -> int:
        """The consumers of this queue whose lease is current, less the dead processes of
        this host among them (their lease lingers until it expires); at least 1."""
        return max(1, self._live_consumer_count())

    def _live_consumer_count(self) -> int:
        try:
            holders = self.leases.holders(self._consumer_prefix)
        except DatabaseError as exc:  # as a claim's: waited out by the consumer
            raise QueueUnavailable(f"the database job queue is unavailable: {exc}") from exc
        return sum(1 for holder in holders if not holder_is_dead(holder))

    def unregister_consumer(self) -> None:
        self.leases.release(consumer_lease(self.queue_name, self.consumer_id), self.consumer_id)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with self.db.session() as session:
                yield session
        except SchemaOutOfDate:
            raise
        except DatabaseError as exc:
            raise QueueUnavailable(f"the database job queue is unavailable: {exc}") from exc
