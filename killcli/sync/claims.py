"""Claims on killmail bodies that every worker of one database sees.

The in-process registry (:mod:`killcli.sync.inflight`) keeps two syncs of one process from
fetching a body twice; a claim keeps two processes, on any host, from doing so. A claim is
a row ``(killmail_id, owner, expires_at)`` in ``body_claims``; its owner is one sync of
one process (:func:`killcli.holders.this_owner` plus an engine and a sync number).

* **Taken** in bulk for a sync's plan: one ``INSERT .. ON CONFLICT DO NOTHING RETURNING``
  per chunk of ids. Only when some ids are held already does a ``SELECT`` look at their
  holders: a claim that expired, or whose holder is a dead process of this host
  (:func:`killcli.holders.holder_is_dead`) or a finished sync of this engine, is taken
  over by a conditional ``UPDATE``, so a race between two takers is settled by the
  database.
* **Renewed** by one heartbeat per engine: one ``UPDATE`` a tick for the claims of every
  running sync, and none while no sync holds any. A dead process's claims lapse
  ``ttl_s`` after its last beat; a finished sync's are never renewed again.
* **Released** in the transaction that saves the body or records it pending
  (:meth:`ClaimSet.release_in`), so a claim never disappears before the outcome of the
  fetch is visible to the workers waiting for it; what a sync still holds when it ends
  (an error half-way) is deleted by :meth:`ClaimSet.close`.

A claim held by a live owner elsewhere means "wait": the engine polls for the body and
tries the claim again, which takes it over once it lapses.

A sync claims its bodies a block at a time, as its body threads get to them, and publishes
the rest of its list as **wants** (``body_wants``, :meth:`ClaimSet.want`): a worker that
leaves through another egress and has budget to spare may claim some of them first and
fetch them (:mod:`killcli.sync.helping`); the sync then waits for those as for any body
claimed elsewhere. Wants are deleted with the body's save, by their sync's end, or by the
helper that could not fetch one (the sync then fetches it itself); those of a sync that
died lapse after :data:`WANT_TTL_S`.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.db import Database
from killcli.db.models import BodyClaim, BodyWant, PendingKillmail, table_of
from killcli.db.store import KILLMAILS, READ_CHUNK, dialect_insert, existing_killmail_ids
from killcli.esi.ledger import egress_identity
from killcli.esi.models import KillmailRef
from killcli.holders import holder_is_dead, this_owner
from killcli.ticker import Ticker

CLAIMS = table_of(BodyClaim)
WANTS = table_of(BodyWant)
PENDING = table_of(PendingKillmail)
CLAIM_TTL_S = 10.0  # a dead owner's claims lapse this long after its last heartbeat
HEARTBEATS_PER_TTL = 4  # a beat or two may come late (a busy database) before claims lapse
CHUNK = 400  # ids per statement, well below every driver's parameter limit
WANT_TTL_S = 900.0  # a want of a sync that died is not fetched for it after this


@dataclass(frozen=True)
class Want:
    """A body another sync will fetch when its budget allows, and whose list it is from."""

    killmail_id: int
    killmail_hash: str
    character_id: int | None
    corporation_id: int | None

    @property
    def ref(self) -> KillmailRef:
        return KillmailRef(self.killmail_id, self.killmail_hash)


class BodyClaims:
    """The body claims of one sync engine: a :class:`ClaimSet` per sync, one heartbeat."""

    def __init__(
        self,
        db: Database,
        *,
        owner: str | None = None,
        egress: str | None = None,
        ttl_s: float = CLAIM_TTL_S,
        clock: Clock = SYSTEM_CLOCK,
        is_dead: Callable[[str], bool] = holder_is_dead,
    ) -> None:
        # Two engines of one process (tests, tools) must not take each other's claims for
        # their own: the random part tells them apart.
        self.owner = owner or this_owner(f"bodies.{secrets.token_hex(3)}")
        self.egress = egress or egress_identity(None, None)  # whose budget our fetches spend
        self.ttl_s = ttl_s
        self.db = db
        self.now = clock.now
        self._is_dead = is_dead
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._active: dict[str, ClaimSet] = {}  # sets holding claims, by owner
        self._heartbeat: Ticker | None = None

    def open(self) -> ClaimSet:
        """The claims of one sync (costs nothing until it takes some)."""
        return ClaimSet(self, f"{self.owner}.{next(self._numbers)}")

    def renew(self) -> int:
        """Extend the claims of every running sync by ``ttl_s``; returns how many."""
        with self._lock:
            owners = sorted(self._active)
        if not owners:
            return 0
        # Lock the rows in id order, the order takers use, so that a takeover racing this
        # beat on PostgreSQL cannot deadlock with it.
        ours = (
            select(CLAIMS.c.killmail_id)
            .where(CLAIMS.c.owner.in_(owners))
            .order_by(CLAIMS.c.killmail_id)
            .with_for_update()
        )
        with self.db.session() as session:
            result = session.execute(
                update(CLAIMS)
                .where(CLAIMS.c.killmail_id.in_(ours.scalar_subquery()))
                .values(expires_at=self.expiry(self.now()))
            )
            return int(cast(CursorResult[Any], result).rowcount)

    def wanted_elsewhere(self, limit: int) -> list[Want]:
        """Up to ``limit`` bodies that syncs of other egresses want, nobody claims and
        are not stored yet, oldest first (their syncs fetch newest first)."""
        claimed = select(CLAIMS.c.killmail_id).where(CLAIMS.c.killmail_id == WANTS.c.killmail_id)
        stored = select(KILLMAILS.c.killmail_id).where(
            KILLMAILS.c.killmail_id == WANTS.c.killmail_id
        )
        with self.db.session() as session:
            rows = session.execute(
                select(
                    WANTS.c.killmail_id,
                    WANTS.c.killmail_hash,
                    WANTS.c.character_id,
                    WANTS.c.corporation_id,
                )
                .where(self._wanted_by_others(), ~claimed.exists(), ~stored.exists())
                .order_by(WANTS.c.killmail_id)
                .limit(limit)
            )
            return [Want(*row) for row in rows]

    def wanted_by_other_egresses(self) -> bool:
        """Whether syncs of other egresses still want bodies (claimed or not)."""
        with self.db.session() as session:
            found = session.scalar(
                select(WANTS.c.killmail_id).where(self._wanted_by_others()).limit(1)
            )
        return found is not None

    def _wanted_by_others(self) -> ColumnElement[bool]:
        """Wants of syncs on other egresses that have not lapsed."""
        return and_(WANTS.c.egress != self.egress, WANTS.c.expires_at > self.now())

    def forget_lapsed_wants(self) -> None:
        """Delete the wants of syncs that died (they lapsed long ago)."""
        with self.db.session() as session:
            delete_wants(session, WANTS.c.expires_at <= self.now())

    def close(self) -> None:
        """Stop the heartbeat; claims still held lapse by their expiry."""
        with self._lock:
            heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()

    def expiry(self, now: datetime) -> datetime:
        """When a claim taken or renewed at ``now`` lapses."""
        return now + timedelta(seconds=self.ttl_s)

    def has_lapsed(self, owner: str) -> bool:
        """Whether ``owner``'s claims may be taken before they expire: a dead process of
        this host, or a sync of this engine that has ended."""
        if owner.startswith(f"{self.owner}."):
            with self._lock:
                return owner not in self._active
        return self._is_dead(owner)

    def activate(self, claims: ClaimSet) -> None:
        """A sync holds claims now: renew them (and start the heartbeat)."""
        with self._lock:
            self._active[claims.owner] = claims
            if self._heartbeat is None:
                self._heartbeat = Ticker(
                    self.ttl_s / HEARTBEATS_PER_TTL, self.renew, "killsync-claims"
                )
                self._heartbeat.start()

    def deactivate(self, claims: ClaimSet) -> None:
        """A sync holds no claims any more."""
        with self._lock:
            self._active.pop(claims.owner, None)


class ClaimSet:
    """The claims of one sync; settle every id it takes, then :meth:`close` it."""

    def __init__(self, claims: BodyClaims, owner: str) -> None:
        self.owner = owner
        self._claims = claims
        self._lock = threading.Lock()
        self._held: set[int] = set()
        self._wanting = False  # published wants (deleted by close)

    def want(self, refs: Sequence[KillmailRef], whose: Mapping[str, int | None]) -> None:
        """Publish bodies this sync will fetch later (``whose``: the list's owner columns,
        ``character_id`` and ``corporation_id``), for workers of other egresses to fetch
        first; a body wanted already keeps its first want."""
        if not refs:
            return
        self._wanting = True
        expires = self._claims.now() + timedelta(seconds=WANT_TTL_S)
        rows = [
            {
                "killmail_id": ref.killmail_id,
                "killmail_hash": ref.killmail_hash,
                **whose,
                "owner": self.owner,
                "egress": self._claims.egress,
                "expires_at": expires,
            }
            for ref in refs
        ]
        with self._claims.db.session() as session:
            stmt = dialect_insert(session, WANTS).on_conflict_do_nothing()
            for start in range(0, len(rows), CHUNK):
                session.execute(stmt, rows[start : start + CHUNK])

    def take(self, killmail_ids: Iterable[int]) -> set[int]:
        """Claim these ids; returns those we hold now (the others are held elsewhere)."""
        ids = sorted(set(killmail_ids))  # one lock order for every taker: no deadlocks
        if not ids:
            return set()
        taken: set[int] = set()
        # Active before the claims exist: a sync of this engine that meets them must see
        # a running holder, never a finished one whose leftovers it may take over.
        self._claims.activate(self)
        try:
            with self._claims.db.session() as session:
                now = self._claims.now()
                for start in range(0, len(ids), CHUNK):
                    taken |= self._take_chunk(session, ids[start : start + CHUNK], now)
        finally:
            with self._lock:
                self._held |= taken
                idle = not self._held
            if idle:
                self._claims.deactivate(self)
        return taken

    def take_wanted(self, killmail_ids: Iterable[int]) -> set[int]:
        """Claim bodies other syncs want; returns those we hold now that are not stored.
        A want may outlive its body (published just after another worker saved it, or
        left by a sync that found it stored): once we hold the claim, nobody can save it
        unseen, so a body stored by then is dropped here, its want and our claim."""
        taken = self.take(killmail_ids)
        if not taken:
            return taken
        with self._claims.db.session() as session:
            stored = existing_killmail_ids(session, taken)
            if stored:
                delete_wants(session, WANTS.c.killmail_id.in_(sorted(stored)))
                self.release_in(session, stored)
        return taken - stored

    def release_in(self, session: Session, killmail_ids: Iterable[int]) -> None:
        """Drop our claims on these ids in the caller's transaction (the one that saves
        their bodies or records them pending); ids we do not hold cost nothing."""
        with self._lock:
            ids = sorted(self._held.intersection(killmail_ids))
            self._held.difference_update(ids)
            idle = not self._held
        if idle:
            self._claims.deactivate(self)  # nothing left to renew
        for start in range(0, len(ids), CHUNK):
            session.execute(
                delete(CLAIMS).where(
                    CLAIMS.c.owner == self.owner,
                    CLAIMS.c.killmail_id.in_(ids[start : start + CHUNK]),
                )
            )

    @property
    def held(self) -> int:
        """How many claims this sync holds."""
        with self._lock:
            return len(self._held)

    def give_back(self, killmail_ids: Sequence[int]) -> None:
        """Bodies we claimed for another sync's wants and could not fetch: drop the wants
        and our claims, so that the sync waiting for them fetches them itself."""
        with self._claims.db.session() as session:
            delete_wants(session, WANTS.c.killmail_id.in_(killmail_ids))
            self.release_in(session, killmail_ids)

    def close(self) -> None:
        """The sync is over: delete the claims it did not settle and the wants it
        published (one statement each, only when there are some) and stop renewing them."""
        self._claims.deactivate(self)  # first: if the delete fails, they are not renewed
        with self._lock:
            left, self._held = self._held, set()
        wanting, self._wanting = self._wanting, False
        if left or wanting:
            with self._claims.db.session() as session:
                if left:
                    session.execute(delete(CLAIMS).where(CLAIMS.c.owner == self.owner))
                if wanting:
                    delete_wants(session, WANTS.c.owner == self.owner)

    def _take_chunk(self, session: Session, ids: Sequence[int], now: datetime) -> set[int]:
        stmt = (
            dialect_insert(session, CLAIMS).on_conflict_do_nothing().returning(CLAIMS.c.killmail_id)
        )
        expires = self._claims.expiry(now)
        rows = [{"killmail_id": k, "owner": self.owner, "expires_at": expires} for k in ids]
        taken = set(session.scalars(stmt, rows))
        if len(taken) < len(ids):
            taken |= self._take_over(session, [k for k in ids if k not in taken], now)
        return taken

    def _take_over(self, session: Session, ids: Sequence[int], now: datetime) -> set[int]:
        """Of ids claimed already: take those whose claim expired, is ours, or whose
        holder has lapsed (:meth:`BodyClaims.has_lapsed`)."""
        rows = session.execute(
            select(CLAIMS.c.owner, CLAIMS.c.expires_at).where(CLAIMS.c.killmail_id.in_(ids))
        ).all()
        lapsed = {
            owner
            for owner in {row.owner for row in rows}
            if owner == self.owner or self._claims.has_lapsed(owner)
        }
        if not lapsed and all(row.expires_at > now for row in rows):
            return set()  # every holder is alive: nothing to write
        stmt = (
            update(CLAIMS)
            .where(
                CLAIMS.c.killmail_id.in_(ids),
                or_(CLAIMS.c.expires_at <= now, CLAIMS.c.owner.in_(sorted(lapsed))),
            )
            .values(owner=self.owner, expires_at=self._claims.expiry(now))
            .returning(CLAIMS.c.killmail_id)
        )
        return set(session.scalars(stmt))


def delete_wants(session: Session, which: ColumnElement[bool]) -> None:
    """Delete wants, their rows locked in id order (on PostgreSQL) as every deleter does:
    a sync's end and a helper's save may delete the same rows at once without deadlock."""
    ids = select(WANTS.c.killmail_id).where(which).order_by(WANTS.c.killmail_id).with_for_update()
    session.execute(delete(WANTS).where(WANTS.c.killmail_id.in_(ids.scalar_subquery())))


def released_as_pending(
    session: Session, killmail_ids: Sequence[int], now: datetime
) -> dict[int, str]:
    """Of killmails whose claim was just released unsaved, those its holder recorded
    pending (not due ``now``: it has just tried), with the reason: ``{killmail id: reason}``."""
    reasons: dict[int, str] = {}
    for start in range(0, len(killmail_ids), READ_CHUNK):
        rows = session.execute(
            select(PENDING.c.killmail_id, PENDING.c.reason).where(
                PENDING.c.killmail_id.in_(killmail_ids[start : start + READ_CHUNK]),
                PENDING.c.next_attempt_at > now,
            )
        )
        reasons.update({row.killmail_id: row.reason for row in rows})
    return reasons
