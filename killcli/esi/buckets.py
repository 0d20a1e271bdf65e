"""The local model of one ESI floating-window token bucket (pure arithmetic, no locking).

ESI tells us, per response, the bucket's size (``X-Ratelimit-Limit``), what is left
(``-Remaining``) and what this response cost (``-Used``); a spent token comes back one
window after it was spent. Between responses we predict the balance ourselves::

    available(now) = limit - others(now) - own_used(now) - reserved

* ``own_used``: what our own responses spent during the last window (a ledger of
  ``(time, tokens)``; entries drop out one window after they were spent).
* ``others``: what the last report says was spent beyond our ledger (another process on
  this host, a previous run). We do not know when those tokens were spent, so we assume
  the worst: they come back one full window after the report, or earlier when a ``429``'s
  ``Retry-After`` says so.
* ``reserved``: the cost of a success (2 tokens) for each request in flight, so concurrent
  threads cannot all spend the last tokens at once.

Each new report replaces the ``others`` estimate, so the model never drifts far from the
server's own count. For a per-IP bucket shared through the egress ledger
(:mod:`killcli.esi.ledger`) the other workers are counted by the ledger instead; the header
model then only steps in when ESI's last report says less is left than a request needs
(:meth:`Bucket.reported_short`: someone outside the ledger spends the same IP's budget).
Our ledger uses the time a response *arrived*, later than ESI spent the tokens, so we
expect tokens back slightly late: the error is on the safe side.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

NEVER = -math.inf


@dataclass(frozen=True, order=True)
class BucketKey:
    """A bucket: rate-limit group, plus the character for authenticated routes."""

    group: str
    owner: int | None = None

    def label(self) -> str:
        return self.group if self.owner is None else f"{self.group}:{self.owner}"


@dataclass(frozen=True)
class BucketSnapshot:
    """One bucket's state as the limiter sees it at one instant."""

    key: BucketKey
    limit_tokens: int | None
    window_s: float | None
    reported_remaining: int | None
    available_tokens: int | None
    reserved_tokens: int
    own_used_tokens: int
    blocked_for_s: float


@dataclass(frozen=True)
class _Spend:
    at_s: float
    tokens: int


class Bucket:
    """What we know and predict about one bucket. The :class:`RateLimiter` locks around it."""

    def __init__(self, key: BucketKey) -> None:
        self.key = key
        self.limit_tokens: int | None = None
        self.window_s: float | None = None
        self.reported_remaining: int | None = None
        self.others_tokens = 0
        self.others_return_at_s = NEVER
        self.reserved_tokens = 0
        self.blocked_until_s = NEVER
        self.probing = False
        # Our spends in arrival order (so also in the order they come back) and their sum:
        # the limiter asks for both on every decision, from many waiting threads.
        self._ledger: deque[_Spend] = deque()
        self._ledger_tokens = 0

    @property
    def known(self) -> bool:
        """True once a response told us the bucket's size."""
        return self.limit_tokens is not None and self.window_s is not None

    def own_used(self, now_s: float) -> int:
        """Tokens our own responses spent that have not come back yet."""
        window_s = self.window_s or 0.0
        while self._ledger and self._ledger[0].at_s + window_s <= now_s:
            self._ledger_tokens -= self._ledger.popleft().tokens
        return self._ledger_tokens

    def others(self, now_s: float) -> int:
        """Tokens spent by others that we still count as gone."""
        return self.others_tokens if now_s < self.others_return_at_s else 0

    def available(self, now_s: float) -> int:
        """Predicted tokens free for a new request (only meaningful when :attr:`known`)."""
        limit = self.limit_tokens or 0
        return limit - self.others(now_s) - self.own_used(now_s) - self.reserved_tokens

    def record(
        self, now_s: float, *, spent: int, limit: tuple[int, float] | None, remaining: int | None
    ) -> None:
        """Book one response: its cost into the ledger, its report into the estimate."""
        if limit is not None:
            self.limit_tokens, self.window_s = limit
        if spent > 0:
            self._ledger.append(_Spend(now_s, spent))
            self._ledger_tokens += spent
        if remaining is None or self.limit_tokens is None or self.window_s is None:
            return
        self.reported_remaining = remaining
        # Whatever the server counts beyond our own ledger was spent by someone else.
        self.others_tokens = max(0, self.limit_tokens - remaining - self.own_used(now_s))
        self.others_return_at_s = now_s + self.window_s

    def block(self, now_s: float, retry_after_s: float) -> None:
        """A 429: nothing goes out before ``Retry-After``, when ESI says tokens are back."""
        until_s = now_s + retry_after_s
        self.blocked_until_s = max(self.blocked_until_s, until_s)
        if self.others_tokens:
            self.others_return_at_s = min(self.others_return_at_s, until_s)

    def reported_short(self, need: int, now_s: float) -> bool:
        """ESI's last report, less what is in flight since, leaves fewer than ``need`` tokens.

        A report older than one window says nothing any more.
        """
        if self.reported_remaining is None or now_s >= self.others_return_at_s:
            return False
        return self.reported_remaining - self.reserved_tokens < need

    def seconds_until(self, need: int, now_s: float) -> float | None:
        """How long until ``need`` tokens are free if we send nothing else meanwhile.

        ``None`` when returning tokens alone never gets there: requests in flight hold the
        missing tokens and the caller must wait for their responses.
        """
        deficit = need - self.available(now_s)
        if deficit <= 0:
            return 0.0
        window_s = self.window_s or 0.0
        # The ledger comes back in order; the others' tokens come back all at once.
        others_at_s = self.others_return_at_s if self.others(now_s) else math.inf
        for spend in self._ledger:
            back_at_s = spend.at_s + window_s
            if others_at_s <= back_at_s:
                deficit -= self.others_tokens
                if deficit <= 0:
                    return max(0.0, others_at_s - now_s)
                others_at_s = math.inf
            deficit -= spend.tokens
            if deficit <= 0:
                return max(0.0, back_at_s - now_s)
        if others_at_s < math.inf and deficit - self.others_tokens <= 0:
            return max(0.0, others_at_s - now_s)
        return None

    def snapshot(self, now_s: float) -> BucketSnapshot:
        return BucketSnapshot(
            key=self.key,
            limit_tokens=self.limit_tokens,
            window_s=self.window_s,
            reported_remaining=self.reported_remaining,
            available_tokens=self.available(now_s) if self.known else None,
            reserved_tokens=self.reserved_tokens,
            own_used_tokens=self.own_used(now_s),
            blocked_for_s=max(0.0, self.blocked_until_s - now_s),
        )
