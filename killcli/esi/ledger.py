"""The egress ledger: ESI's per-IP budgets, shared by every process leaving through one IP.

ESI keys the ``killmail`` bucket and the error limit by the address it sees. Processes that
leave through the same address (an *egress*: the source address, the host name, or
``KILLSYNC_EGRESS`` for hosts behind one NAT) therefore spend one budget, and each must
know what the others spent. They agree through two tables of the database (no new
service):

* ``egress_budgets`` - one row per ``(egress, budget)``: a rate-limit group, or
  :data:`ERROR_LIMIT`. It holds the bucket's size as ESI reported it and ``blocked_until``:
  the end of a 429's ``Retry-After`` (the bucket is closed for every process of the egress)
  or of an error-limit pause (nothing at all goes out). The row is also the lock that
  serialises takers: ``SELECT ... FOR UPDATE`` on PostgreSQL, the ``BEGIN IMMEDIATE`` write
  lock on SQLite.
* ``egress_blocks`` - tokens a process took: ``(owner, taken_at, tokens, expires_at)``.
  ESI's window floats (a token spent at *t* is back at *t + window*), so a block counts
  until ``expires_at``. While its owner may still spend from it (``hold_s`` after it was
  taken) that is ``taken_at + hold_s + window``: a process that dies gives its tokens back
  by itself. When the owner is done with a block (it took the next one, a 429 closed the
  bucket, it exits) it *closes* it: ``tokens`` becomes what was really spent and
  ``expires_at`` the last response's arrival plus one window (later than ESI's admission:
  the error is on the safe side). Unused tokens are thereby handed back.

Taking a block of *k* tokens is one short transaction (:meth:`EgressLedger.lease`): lock the
budget row, close the caller's finished blocks, drop expired ones, sum the live ones, and
insert the new block only if the sum plus *k* stays within ``limit - margin``; otherwise the
answer says when enough tokens come back. Blocks are a few requests' worth (about 1/50 of
the bucket), so the database sees a transaction per handful of requests, not per token.

:class:`~killcli.esi.shared.SharedBudget` is the process side: it pays each request from the
current block (in memory, under the :class:`~killcli.esi.ratelimit.RateLimiter`'s lock) and
leases the next one when half of it is spent, so the other threads go on meanwhile. A
block's finished predecessors are closed in the next lease's transaction; once a lease was
refused (the budget is tight, others wait for those tokens) they are closed as soon as their
last answer arrived. The probe that learns a bucket's size is booked as a closed block, and
the size in the budget row, so the egress's other processes send no probe of their own. The
header model of :mod:`killcli.esi.buckets` still wins when ESI reports less than the ledger
allows (another client on the same IP).
Every ``poll_s`` the process reads the egress's rows, so that a 429 or an error-limit pause
recorded by any process stops this one too; its own 429s and pauses it records at once.
Per-character buckets never come here: they are keyed by (application, character) and stay in
process.

Measured (``bench/bench_ledger.py``, 2 shared cores): a lease is about 0.7-0.9 ms on SQLite
and 2 ms on PostgreSQL: 56 and 160 µs per token with blocks of 12 tokens (the ``fleet``
scenario's 600-token bucket), 13 and 28 µs with blocks of 64 (ESI's 3600-token bucket).
PostgreSQL leases commit without waiting for the WAL flush (:meth:`EgressLedger.lease`).

Times are epoch seconds from the caller's wall clock: hosts sharing an egress keep NTP time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from killcli.db import Database
from killcli.db.models import EgressBlock, EgressBudget, table_of
from killcli.db.store import insert_ignore
from killcli.holders import this_host

BUDGETS = table_of(EgressBudget)
BLOCKS = table_of(EgressBlock)
ERROR_LIMIT = "error-limit"  #: the budget row of ESI's error limit (``blocked_until`` = pause)
RETRY_ON_DB_ERROR_S = 1.0
PURGE_EVERY = 16  #: leases between deletions of expired blocks (by each process)
Wall = Callable[[], float]


def egress_identity(egress: str | None, source_address: str | None) -> str:
    """Who ESI sees: ``KILLSYNC_EGRESS``, else the source address, else the host name."""
    return egress or source_address or this_host()


@dataclass(frozen=True)
class Grant:
    """A block taken: ``tokens`` may be spent until it is closed or ``hold_s`` passed."""

    block_id: int
    tokens: int
    taken_at: float
    holders: int  #: other processes holding live blocks of this budget


@dataclass(frozen=True)
class Refusal:
    """No block now: try again at ``until`` (a 429 closed the bucket when ``closed``)."""

    until: float
    holders: int
    closed: bool


@dataclass(frozen=True)
class BlockClose:
    """A block its owner is done with: what it really spent and when that comes back."""

    block_id: int
    tokens: int
    expires_at: float


@dataclass(frozen=True)
class BudgetState:
    """One budget row: the bucket's ``(limit_tokens, window_s)`` if known, and its block."""

    limit: tuple[int, float] | None
    blocked_until: float


@dataclass(frozen=True)
class BudgetTotals:
    """One shared budget of one egress, as `killsync stats` shows it."""

    egress: str
    budget: str
    limit_tokens: int | None
    window_s: float | None
    in_use_tokens: int
    holders: int
    blocked_for_s: float


class EgressLedger:
    """The SQL side: every method is one short transaction on the shared tables."""

    def __init__(self, db: Database, egress: str, owner: str, *, wall: Wall = time.time) -> None:
        self.db = db
        self.egress = egress
        self.owner = owner
        self._wall = wall
        self._lock_rows = db.dialect == "postgresql"  # SQLite: BEGIN IMMEDIATE locks all
        self._leases = 0

    def lease(
        self,
        budget: str,
        *,
        tokens: int,
        limit_tokens: int,
        window_s: float,
        margin: int,
        hold_s: float,
        closing: Sequence[BlockClose] = (),
    ) -> Grant | Refusal:
        """Take ``tokens`` from ``budget`` if they fit under ``limit - margin``."""
        now = self._wall()
        with self.db.session() as session:
            self._no_fsync(session)
            blocked_until = self._lock_budget(session, budget, limit_tokens, window_s, now)
            self._close(session, closing)
            live = self._live_blocks(session, budget, now)
            holders = len({row.owner for row in live} - {self.owner})
            if blocked_until > now:
                return Refusal(blocked_until, holders, closed=True)
            excess = sum(row.tokens for row in live) + tokens - (limit_tokens - margin)
            if excess > 0:
                return Refusal(_back_at(live, excess, now + window_s), holders, closed=False)
            block_id = session.scalar(
                insert(BLOCKS)
                .values(
                    egress=self.egress,
                    budget=budget,
                    owner=self.owner,
                    taken_at=now,
                    tokens=tokens,
                    expires_at=now + hold_s + window_s,
                )
                .returning(BLOCKS.c.id)
            )
        return Grant(int(block_id or 0), tokens, now, holders)

    def record_spend(
        self, budget: str, tokens: int, limit_tokens: int | None, window_s: float
    ) -> None:
        """Book tokens spent outside any block (a probe that learnt the bucket's size), and
        the size, so that the egress's other processes need no probe of their own."""
        now = self._wall()
        with self.db.session() as session:
            self._no_fsync(session)
            self._lock_budget(session, budget, limit_tokens, window_s, now)
            session.execute(
                insert(BLOCKS).values(
                    egress=self.egress,
                    budget=budget,
                    owner=self.owner,
                    taken_at=now,
                    tokens=tokens,
                    expires_at=now + window_s,
                )
            )

    def close_blocks(self, closing: Sequence[BlockClose]) -> None:
        """Hand blocks back: their unused tokens are free for every process at once."""
        if closing:
            with self.db.session() as session:
                self._close(session, closing)

    def block(self, budget: str, until: float) -> None:
        """Nothing from ``budget`` (or nothing at all: :data:`ERROR_LIMIT`) before ``until``."""
        with self.db.session() as session:
            self._lock_budget(session, budget, None, None, self._wall())
            session.execute(
                update(BUDGETS)
                .where(*self._budget_is(budget), BUDGETS.c.blocked_until < until)
                .values(blocked_until=until)
            )

    def budgets(self) -> dict[str, BudgetState]:
        """Every budget of this egress: its size as ESI reported it, and ``blocked_until``."""
        with self.db.session() as session:
            rows = session.execute(
                select(
                    BUDGETS.c.budget,
                    BUDGETS.c.limit_tokens,
                    BUDGETS.c.window_s,
                    BUDGETS.c.blocked_until,
                ).where(BUDGETS.c.egress == self.egress)
            )
            return {
                str(row.budget): BudgetState(
                    None
                    if row.limit_tokens is None or row.window_s is None
                    else (int(row.limit_tokens), float(row.window_s)),
                    float(row.blocked_until),
                )
                for row in rows
            }

    def blocked(self) -> dict[str, float]:
        """``{budget: blocked_until}`` of every budget of this egress blocked right now."""
        now = self._wall()
        return {
            budget: state.blocked_until
            for budget, state in self.budgets().items()
            if state.blocked_until > now
        }

    # -- internals ---------------------------------------------------------------------

    def _no_fsync(self, session: Session) -> None:
        """PostgreSQL: commit without waiting for the WAL flush (a lease costs ~5x less).

        Blocks live seconds to minutes; a database crash could forget the last few, and
        every worker fails its requests then anyway. SQLite in WAL mode with
        ``synchronous=NORMAL`` already commits without a sync.
        """
        if self._lock_rows:
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))

    def _budget_is(self, budget: str) -> tuple[Any, Any]:
        return BUDGETS.c.egress == self.egress, BUDGETS.c.budget == budget

    def _lock_budget(
        self,
        session: Session,
        budget: str,
        limit_tokens: int | None,
        window_s: float | None,
        now: float,
    ) -> float:
        """Lock the budget's row (creating it once); returns its ``blocked_until``."""
        stmt = select(BUDGETS.c.blocked_until, BUDGETS.c.limit_tokens, BUDGETS.c.window_s).where(
            *self._budget_is(budget)
        )
        if self._lock_rows:
            stmt = stmt.with_for_update()
        row = session.execute(stmt).first()
        if row is None:
            session.execute(
                insert_ignore(session, BUDGETS).values(
                    egress=self.egress,
                    budget=budget,
                    limit_tokens=limit_tokens,
                    window_s=window_s,
                    blocked_until=0.0,
                    updated_at=now,
                )
            )
            row = session.execute(stmt).one()
        elif limit_tokens is not None and (row.limit_tokens, row.window_s) != (
            limit_tokens,
            window_s,
        ):
            session.execute(
                update(BUDGETS)
                .where(*self._budget_is(budget))
                .values(limit_tokens=limit_tokens, window_s=window_s, updated_at=now)
            )
        return float(row.blocked_until)

    def _close(self, session: Session, closing: Iterable[BlockClose]) -> None:
        rows = [
            {"b_id": c.block_id, "b_tokens": c.tokens, "b_expires": c.expires_at} for c in closing
        ]
        if rows:
            session.execute(
                update(BLOCKS)
                .where(BLOCKS.c.id == bindparam("b_id"))
                .values(tokens=bindparam("b_tokens"), expires_at=bindparam("b_expires")),
                rows,
            )

    def _live_blocks(
        self, session: Session, budget: str, now: float
    ) -> Sequence[Row[Any, Any, Any]]:
        where = (BLOCKS.c.egress == self.egress, BLOCKS.c.budget == budget)
        self._leases += 1
        if self._leases % PURGE_EVERY == 1:  # housekeeping; expired rows are ignored anyway
            session.execute(delete(BLOCKS).where(*where, BLOCKS.c.expires_at <= now))
        return session.execute(
            select(BLOCKS.c.tokens, BLOCKS.c.expires_at, BLOCKS.c.owner)
            .where(*where, BLOCKS.c.expires_at > now)
            .order_by(BLOCKS.c.expires_at)
        ).all()


def _back_at(live: Sequence[Row[Any, Any, Any]], excess: int, fallback: float) -> float:
    """When enough blocks have expired to free ``excess`` tokens."""
    for row in live:
        excess -= int(row.tokens)
        if excess <= 0:
            return float(row.expires_at)
    return fallback


def egress_totals(db: Database, *, wall: Wall = time.time) -> list[BudgetTotals]:
    """Every egress's shared budgets: tokens in use (live blocks), holders, blocks."""
    now = wall()
    with db.session() as session:
        usage = {
            (str(e), str(b)): (int(t or 0), int(h))
            for e, b, t, h in session.execute(
                select(
                    BLOCKS.c.egress,
                    BLOCKS.c.budget,
                    func.sum(BLOCKS.c.tokens),
                    func.count(BLOCKS.c.owner.distinct()),
                )
                .where(BLOCKS.c.expires_at > now)
                .group_by(BLOCKS.c.egress, BLOCKS.c.budget)
            )
        }
        budgets = session.execute(
            select(BUDGETS).order_by(BUDGETS.c.egress, BUDGETS.c.budget)
        ).all()
    return [
        BudgetTotals(
            row.egress,
            row.budget,
            row.limit_tokens,
            row.window_s,
            *usage.get((row.egress, row.budget), (0, 0)),
            blocked_for_s=max(0.0, float(row.blocked_until) - now),
        )
        for row in budgets
    ]
