"""The process side of the egress ledger: requests paid from blocks leased in the database.

See :mod:`killcli.esi.ledger` for the design. :class:`SharedBudget` keeps, per shared (per-IP)
bucket, the block this process pays from, the blocks it is done with (closed in the next
transaction) and what the ledger last said (a refusal, a 429, how many others hold blocks).
Its local methods run under the :class:`~killcli.esi.ratelimit.RateLimiter`'s lock; the
ones that talk to the database never do.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from killcli.errors import KillsyncError
from killcli.esi.ledger import (
    ERROR_LIMIT,
    RETRY_ON_DB_ERROR_S,
    BlockClose,
    EgressLedger,
    Grant,
    Refusal,
    Wall,
)


class LeasedBlock:
    """A block this process holds; ``reserved`` is the cost of its requests in flight."""

    __slots__ = (
        "block_id",
        "last_at",
        "leased",
        "local",
        "reserved",
        "retired",
        "taken_at",
        "used",
    )

    def __init__(self, grant: Grant, local: _Local) -> None:
        self.local = local
        self.block_id = grant.block_id
        self.leased = grant.tokens
        self.taken_at = self.last_at = grant.taken_at
        self.used = 0
        self.reserved = 0
        self.retired = False

    def left(self) -> int:
        """Tokens of the block neither spent nor reserved by a request in flight."""
        return self.leased - self.used - self.reserved

    def closing(self) -> BlockClose:
        """The row update that hands the block back (see :meth:`EgressLedger.lease`)."""
        # No spend: expire now. Else the last answer's arrival (after ESI admitted it).
        expires_at = self.last_at + self.local.window_s if self.used else self.taken_at
        return BlockClose(self.block_id, self.used, expires_at)


class _Local:
    """What this process knows of one shared bucket."""

    def __init__(self) -> None:
        self.block: LeasedBlock | None = None
        self.to_close: list[BlockClose] = []
        self.leasing = False
        self.retry_at = 0.0
        self.closed_until = 0.0
        self.tight_until = 0.0
        self.holders = 0
        self.window_s = 0.0
        self.hold_s = 0.0  # how long a block may pay: its ledger expiry counts on it
        self.limit: tuple[int, float] | None = None  # (tokens, window_s) per the ledger


@dataclass(frozen=True)
class SharedWait:
    """The shared budget says: not before ``until`` (wall clock)."""

    until: float
    holders: int
    reason: Literal["bucket", "retry_after", "in_flight"]  #: in_flight: a thread is leasing


class NeedLease:
    """The caller must lease the next block (:meth:`SharedBudget.lease`), then ask again."""


NEED_LEASE = NeedLease()


class SharedBudget:
    """Pays requests of shared (per-IP) buckets from blocks leased in the ledger.

    Local methods are cheap and thread-safe; :meth:`lease`, :meth:`refresh`,
    :meth:`block` and :meth:`hand_back` talk to the database and must be called without
    holding the limiter's lock.
    """

    def __init__(
        self,
        ledger: EgressLedger,
        *,
        block_fraction: int = 50,
        max_block_tokens: int = 64,
        hold_s: float = 5.0,
        poll_s: float = 0.25,
        lease_poll_s: float = 0.002,
        wall: Wall = time.time,
    ) -> None:
        self.ledger = ledger
        self._block_fraction = block_fraction
        self._max_block = max_block_tokens
        self._hold_s = hold_s
        self._poll_s = poll_s
        self._lease_poll_s = lease_poll_s
        self._wall = wall
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._next_poll = 0.0
        self._buckets: dict[str, _Local] = {}

    @property
    def egress(self) -> str:
        """The egress whose budget this process shares."""
        return self.ledger.egress

    def wall(self) -> float:
        """The wall clock the ledger's times are in (epoch seconds)."""
        return self._wall()

    def pay(self, group: str, tokens: int) -> LeasedBlock | SharedWait | NeedLease:
        """Reserve ``tokens`` from the current block, or say why not and what to do."""
        now = self._wall()
        with self._lock:
            local = self._local(group)
            if local.closed_until > now:
                return SharedWait(local.closed_until, local.holders, "retry_after")
            block = local.block
            if block is not None and now - block.taken_at > local.hold_s:
                self._retire(local)  # held too long: its ledger expiry no longer covers us
                block = None
            if block is not None and block.left() >= tokens:
                block.reserved += tokens
                return block
            if local.leasing:
                return SharedWait(now + self._lease_poll_s, local.holders, "in_flight")
            if local.retry_at > now:
                return SharedWait(local.retry_at, local.holders, "bucket")
            local.leasing = True
            return NEED_LEASE

    def refill_due(self, group: str) -> bool:
        """True, for one caller, when the current block runs low: lease the next one now.

        Leasing ahead lets the other threads spend what is left meanwhile instead of all
        waiting for the database.
        """
        now = self._wall()
        with self._lock:
            local = self._local(group)
            block = local.block
            if (
                block is None
                or local.leasing
                or local.retry_at > now
                or local.closed_until > now
                or block.left() * 2 >= block.leased
            ):
                return False
            local.leasing = True
            return True

    def settle(self, block: LeasedBlock, reserved: int, spent: int) -> None:
        """Book a response paid from ``block``: its real cost replaces the reservation."""
        now = self._wall()
        with self._lock:
            block.reserved -= reserved
            block.used += spent
            block.last_at = max(block.last_at, now)
            if block.retired and block.reserved <= 0:
                block.local.to_close.append(block.closing())

    def lease(
        self,
        group: str,
        *,
        limit_tokens: int,
        window_s: float,
        reserve: int,
        margin: int,
        ahead: bool = False,
    ) -> None:
        """Lease the next block of ``group`` (after :data:`NEED_LEASE`, or ``ahead`` of
        need after :meth:`refill_due`); updates the state."""
        with self._lock:
            local = self._local(group)
            local.window_s = window_s
            local.hold_s = min(self._hold_s, window_s)
            if not ahead:  # what is left cannot pay a request: close it in this transaction
                self._retire(local)
            closing, local.to_close = local.to_close, []
        margin = max(margin, limit_tokens // 100)
        size = min(
            max(2 * reserve, limit_tokens // self._block_fraction),
            self._max_block,
            max(reserve, limit_tokens - margin),
        )
        try:
            answer: Grant | Refusal = self.ledger.lease(
                group,
                tokens=size,
                limit_tokens=limit_tokens,
                window_s=window_s,
                margin=margin,
                hold_s=local.hold_s,
                closing=closing,
            )
        except KillsyncError:  # the database blinked: nothing taken, the closes wait
            answer = Refusal(self._wall() + RETRY_ON_DB_ERROR_S, 0, closed=False)
            with self._lock:
                local.to_close[:0] = closing
        finally:
            with self._lock:  # whatever happened, the other threads must not wait on us
                local.leasing = False
        with self._lock:
            local.holders = answer.holders
            if isinstance(answer, Grant):
                self._retire(local)  # what is left of it is handed back when it settles
                local.block = LeasedBlock(answer, local)
                local.retry_at = 0.0
                return
            # The budget is tight: close finished blocks at once from now on (flush).
            local.tight_until = self._wall() + window_s
            if answer.closed:
                local.closed_until = max(local.closed_until, answer.until)
            else:
                local.retry_at = answer.until

    def record(self, group: str, tokens: int, limit_tokens: int | None, window_s: float) -> None:
        """A request paid from no block (the probe) spent ``tokens``: book it for all."""
        with contextlib.suppress(KillsyncError):  # the margin covers a lost probe
            self.ledger.record_spend(group, tokens, limit_tokens, window_s)

    def holders(self, group: str) -> int:
        """Other processes that held blocks of ``group`` at our last lease."""
        with self._lock:
            return self._local(group).holders

    def block(self, group: str, until: float) -> None:
        """A 429 (or, for :data:`ERROR_LIMIT`, a pause): record it for the whole egress."""
        if group != ERROR_LIMIT:
            with self._lock:
                local = self._local(group)
                local.closed_until = max(local.closed_until, until)
                self._retire(local)
        # On a database error this process still waits; the others learn from their answers.
        with contextlib.suppress(KillsyncError):
            self.ledger.block(group, until)

    def refresh_due(self) -> bool:
        """True at most every ``poll_s``, for one caller (the one that will refresh)."""
        now = self._wall()
        if now < self._next_poll or not self._poll_lock.acquire(blocking=False):
            return False
        self._next_poll = now + self._poll_s
        return True

    def refresh(self) -> float:
        """Read the egress's blocks (429s, error pause); returns the error pause's end.

        Call only after :meth:`refresh_due` said True.
        """
        try:
            budgets = self.ledger.budgets()
        except KillsyncError:
            budgets = {}
        finally:
            self._poll_lock.release()
        with self._lock:
            for group, state in budgets.items():
                if group == ERROR_LIMIT:
                    continue
                local = self._local(group)
                local.closed_until = max(local.closed_until, state.blocked_until)
                local.limit = state.limit or local.limit
        error_limit = budgets.get(ERROR_LIMIT)
        return 0.0 if error_limit is None else error_limit.blocked_until

    def limit_of(self, group: str) -> tuple[int, float] | None:
        """The bucket's size as another process of the egress learnt it (no probe needed:
        a probe is paid from no block and could overdraw a budget the others spend)."""
        with self._lock:
            local = self._buckets.get(group)
            return None if local is None else local.limit

    def flush(self) -> None:
        """Close settled blocks now when the budget is tight (others wait for their tokens);
        otherwise they ride along with the next lease."""
        now = self._wall()
        closing: list[BlockClose] = []
        with self._lock:
            for local in self._buckets.values():
                if local.to_close and not local.leasing and local.tight_until > now:
                    closing.extend(local.to_close)
                    local.to_close = []
        if closing:
            with contextlib.suppress(KillsyncError):  # they still expire by themselves
                self.ledger.close_blocks(closing)

    def hand_back(self) -> None:
        """Close every block now (idle or exiting): unused tokens go back to the egress."""
        closing: list[BlockClose] = []
        with self._lock:
            for local in self._buckets.values():
                self._retire(local)
                closing.extend(local.to_close)
                local.to_close = []
        # On a database error the blocks expire by themselves (hold_s + window after taken).
        with contextlib.suppress(KillsyncError):
            self.ledger.close_blocks(closing)

    def view(self) -> dict[str, Any]:
        """This process's side, for the worker status: egress, blocks held, holders."""
        with self._lock:
            return {
                "egress": self.egress,
                "buckets": {
                    group: {
                        "block_left": None if local.block is None else local.block.left(),
                        "other_holders": local.holders,
                    }
                    for group, local in sorted(self._buckets.items())
                },
            }

    # -- under self._lock -------------------------------------------------------------

    def _local(self, group: str) -> _Local:
        local = self._buckets.get(group)
        if local is None:
            local = self._buckets[group] = _Local()
        return local

    def _retire(self, local: _Local) -> None:
        block, local.block = local.block, None
        if block is None:
            return
        block.retired = True
        if block.reserved <= 0:
            local.to_close.append(block.closing())
