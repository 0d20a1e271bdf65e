"""ESI's two rate limits: floating-window token buckets and the per-IP error limit.

Token buckets (one per group and key): a request is admitted while the bucket is not
empty (``remaining > 0``), else it gets 429 with ``Retry-After`` (whole seconds, rounded
up, until enough tokens are back for ``remaining > 0``). An admitted request reserves the
2xx price at once (so concurrent requests cannot all slip through) and settles to the
price of its status when it is answered: 2xx = 2, 3xx = 1, 4xx = 5, 5xx = 0 (the 429
itself is free). Tokens come back one window after the request was admitted.

Error limit (per IP, fixed windows counted from server start): at most ``limit``
responses with status >= 400 per window (429s and timeouts included); after that every
ESI route answers 420 until the window ends.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from killsim.clock import Clock

ADMISSION_COST = 2


def token_cost(status: int) -> int:
    """What a response with this status costs (ESI's table)."""
    if status == 429:
        return 0
    if status >= 500:
        return 0
    if status >= 400:
        return 5
    if status >= 300:
        return 1
    return 2


@dataclass(frozen=True)
class BucketReport:
    """What the ``X-Ratelimit-*`` headers of one response say."""

    group: str
    limit: str
    remaining: int
    used: int
    retry_after_s: int | None = None

    def headers(self) -> dict[str, str]:
        """The response headers this state stands for."""
        out = {
            "X-Ratelimit-Group": self.group,
            "X-Ratelimit-Limit": self.limit,
            "X-Ratelimit-Remaining": str(self.remaining),
            "X-Ratelimit-Used": str(self.used),
        }
        if self.retry_after_s is not None:
            out["Retry-After"] = str(self.retry_after_s)
        return out


class _Spend:
    """One request's entry in a bucket's ledger (its price changes once, when settled)."""

    __slots__ = ("at_s", "tokens")

    def __init__(self, at_s: float, tokens: int) -> None:
        self.at_s = at_s
        self.tokens = tokens


class _Ledger:
    """The spends of one bucket still inside the window, with their running total."""

    __slots__ = ("spends", "total")

    def __init__(self) -> None:
        self.spends: deque[_Spend] = deque()
        self.total = 0

    def used(self, now_s: float, window_s: int) -> int:
        """Tokens in use at ``now_s`` (drops spends older than one window)."""
        while self.spends and self.spends[0].at_s + window_s <= now_s:
            self.total -= self.spends.popleft().tokens
        return self.total

    def add(self, spend: _Spend) -> None:
        self.spends.append(spend)
        self.total += spend.tokens

    def reprice(self, spend: _Spend, tokens: int, now_s: float, window_s: int) -> None:
        if spend.at_s + window_s > now_s:  # still counted: adjust the total too
            self.total += tokens - spend.tokens
        spend.tokens = tokens


@dataclass(frozen=True)
class Ticket:
    """An admitted request's reservation; settle it with the response status."""

    group: str
    key: Hashable
    spend: _Spend


class TokenBuckets:
    """Every (group, key) bucket of one server."""

    def __init__(
        self, groups: Mapping[str, tuple[int, int]], limit_headers: Mapping[str, str], clock: Clock
    ) -> None:
        self._groups = dict(groups)
        self._limit_headers = dict(limit_headers)
        self._clock = clock
        self._lock = threading.Lock()
        self._ledgers: dict[tuple[str, Hashable], _Ledger] = {}

    def has(self, group: str) -> bool:
        """True when the scenario limits this group."""
        return group in self._groups

    def admit(self, group: str, key: Hashable) -> Ticket | BucketReport:
        """A ticket when the bucket has tokens, else the 429 report with Retry-After."""
        limit, window_s = self._groups[group]
        now_s = self._clock.monotonic()
        with self._lock:
            ledger = self._ledgers.setdefault((group, key), _Ledger())
            used = ledger.used(now_s, window_s)
            if used < limit:
                spend = _Spend(now_s, ADMISSION_COST)
                ledger.add(spend)
                return Ticket(group, key, spend)
            retry = self._retry_after_s(ledger, used - limit, window_s, now_s)
        return BucketReport(group, self._limit_headers[group], 0, 0, retry)

    @staticmethod
    def _retry_after_s(ledger: _Ledger, excess: int, window_s: int, now_s: float) -> int:
        """Seconds until more than ``excess`` tokens have come back."""
        released = 0
        for spend in ledger.spends:
            released += spend.tokens
            if released > excess:
                return max(1, math.ceil(spend.at_s + window_s - now_s))
        return max(1, window_s)  # not reached: the ledger holds more than the excess

    def settle(self, ticket: Ticket, status: int) -> BucketReport:
        """Charge the status's price; the headers for the response."""
        limit, window_s = self._groups[ticket.group]
        cost = token_cost(status)
        now_s = self._clock.monotonic()
        with self._lock:
            ledger = self._ledgers[(ticket.group, ticket.key)]
            ledger.used(now_s, window_s)  # drop expired spends first: reprice needs that
            ledger.reprice(ticket.spend, cost, now_s, window_s)
            used = ledger.total
        return BucketReport(
            ticket.group, self._limit_headers[ticket.group], max(0, limit - used), cost
        )

    def spent(self) -> dict[str, dict[str, int]]:
        """Tokens currently in use per group and key (for statistics)."""
        now_s = self._clock.monotonic()
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for (group, key), ledger in self._ledgers.items():
                used = ledger.used(now_s, self._groups[group][1])
                out.setdefault(group, {})[key_text(key)] = used
        return out


def key_text(key: Hashable) -> str:
    """A bucket key as text: ``ip`` or ``application:character``."""
    if isinstance(key, tuple):
        return ":".join(str(part) for part in key)
    return str(key)


@dataclass(frozen=True)
class ErrorState:
    """The error-limit headers for one response."""

    remain: int
    reset_s: int

    @property
    def blocked(self) -> bool:
        """True once the window has no errors left (420 time)."""
        return self.remain <= 0

    def headers(self) -> dict[str, str]:
        """The response headers this state stands for."""
        return {
            "X-ESI-Error-Limit-Remain": str(self.remain),
            "X-ESI-Error-Limit-Reset": str(self.reset_s),
        }


class ErrorLimiter:
    """ESI's error limit: ``limit`` errors per fixed ``window_s`` window, per IP."""

    def __init__(self, limit: int, window_s: int, clock: Clock) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._origin_s = clock.monotonic()
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # ip -> (window index, errors)

    def anchor(self, origin_s: float) -> None:
        """Count windows from ``origin_s`` (the server's start)."""
        with self._lock:
            self._origin_s = origin_s
            self._counts.clear()

    def _window(self) -> tuple[int, int]:
        elapsed = self._clock.monotonic() - self._origin_s
        index = int(elapsed // self._window_s)
        reset = max(1, math.ceil((index + 1) * self._window_s - elapsed))
        return index, reset

    def state(self, ip: str) -> ErrorState:
        """Errors left and seconds until the window resets."""
        index, reset = self._window()
        with self._lock:
            seen_index, errors = self._counts.get(ip, (index, 0))
        if seen_index != index:
            errors = 0
        return ErrorState(max(0, self._limit - errors), reset)

    def record(self, ip: str, status: int) -> ErrorState:
        """Count the response if it is an error; the state after it."""
        index, reset = self._window()
        with self._lock:
            seen_index, errors = self._counts.get(ip, (index, 0))
            if seen_index != index:
                errors = 0
            if status >= 400 and status != 420:
                errors += 1
            self._counts[ip] = (index, errors)
        return ErrorState(max(0, self._limit - errors), reset)
