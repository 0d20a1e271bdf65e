"""The process-wide ESI rate limiter: token buckets per group and the global error limit.

One :class:`RateLimiter` is built per process and shared by every sync and thread. Each
request asks :meth:`RateLimiter.acquire` for permission before it is sent and reports its
response with :meth:`RateLimiter.release`. Everything it knows comes from response headers:

* **Buckets** (``X-Ratelimit-*``): see :mod:`killcli.esi.buckets` for the model. A request
  goes out as soon as the bucket can pay for a success (2 tokens) and still keep the safety
  margin; otherwise the limiter sleeps exactly until enough of our own spent tokens come
  back. A bucket we have never heard from lets one request through (a probe) to learn its
  size; the others wait for that answer.
* **429**: the bucket is closed until ``Retry-After``.
* **Error limit** (``X-ESI-Error-Limit-Remain/-Reset``): on a 420, or when the errors left
  fall to the threshold, *every* request of the process waits for the window reset.

* **Shared buckets** (with a :class:`~killcli.esi.shared.SharedBudget`): per-IP buckets
  (no character) are also paid from blocks leased in the database, so that every process of
  one egress spends one budget; a 429 or an error-limit pause seen by any of them stops all
  (see :mod:`killcli.esi.ledger`). The header model above still applies and wins when it
  says less (other clients on the same IP).

Waits are observable: ``on_wait`` is called before each sleep with a :class:`WaitEvent`
whose ``message`` reads like "waiting 41 s for ESI killmail budget", and
:attr:`RateLimiter.wait_reason` / :meth:`RateLimiter.snapshot` describe the current state.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.errors import EsiUnavailable
from killcli.esi.buckets import NEVER, Bucket, BucketKey, BucketSnapshot
from killcli.esi.headers import ErrorLimitInfo, RateLimitInfo, token_cost
from killcli.esi.ledger import ERROR_LIMIT
from killcli.esi.routes import ROUTE_GROUP_HINTS
from killcli.esi.shared import LeasedBlock, NeedLease, SharedBudget, SharedWait

WaitReason = Literal["bucket", "retry_after", "error_limit", "in_flight"]
_CAPPED: frozenset[WaitReason] = frozenset({"retry_after", "error_limit"})


@dataclass(frozen=True)
class WaitEvent:
    """A wait the limiter imposed on one request before sending it."""

    reason: WaitReason
    wait_s: float
    key: BucketKey | None
    shared_with: int = 0  #: other workers spending the same (per-IP) budget

    @property
    def message(self) -> str:
        """One human line, e.g. ``waiting 41 s for ESI killmail budget``."""
        return describe_wait(self.reason, self.key, self.wait_s, self.shared_with)


@dataclass(frozen=True)
class Reservation:
    """Permission to send one request; hand it back with ``release`` or ``cancel``."""

    route: str
    owner: int | None
    key: BucketKey | None
    tokens: int
    probe: bool
    block: LeasedBlock | None = None  # the shared block that paid for it


@dataclass(frozen=True)
class _LeaseOrder:
    """The calling thread must lease the next shared block of ``key`` before deciding."""

    key: BucketKey
    limit_tokens: int
    window_s: float
    ahead: bool = False  # the current block still pays: lease the next before it is spent


@dataclass(frozen=True)
class SpendResult:
    """What one response cost, and from which bucket (``None``: a route without buckets)."""

    key: BucketKey | None
    tokens: int


@dataclass(frozen=True)
class LimiterSnapshot:
    """Everything the CLI may show about rate limiting at one instant."""

    buckets: tuple[BucketSnapshot, ...]
    error_limit_remain: int | None
    paused_for_s: float
    wait_count: int
    waited_s: Mapping[str, float]
    recent_waits: tuple[WaitEvent, ...]
    wait_reason: str | None
    shared: Mapping[str, object] | None = None  #: the egress and our blocks (ledger)


def _definitive(status: int) -> bool:
    """A success: errors (a 401 before the bucket, a 5xx, a deep 429) prove nothing."""
    return status < 400


def describe_wait(
    reason: WaitReason, key: BucketKey | None, wait_s: float, shared_with: int = 0
) -> str:
    """One human line for a wait, e.g. ``waiting 41 s for ESI killmail budget``.

    A budget other workers spend too says so: ``..., shared with 2 other workers``.
    """
    seconds = math.ceil(wait_s)
    shared = (
        ""
        if shared_with <= 0
        else (f", shared with {shared_with} other worker{'s' if shared_with != 1 else ''}")
    )
    if reason == "error_limit":
        return f"waiting {seconds} s for the ESI error limit to reset{shared}"
    target = "ESI" if key is None else f"ESI {key.group}"
    whose = "" if key is None or key.owner is None else f" (character {key.owner})"
    if reason == "retry_after":
        return f"waiting {seconds} s: {target} answered 429, retrying after{whose}{shared}"
    if reason == "in_flight":
        return f"waiting for requests in flight to {target}{whose}"
    return f"waiting {seconds} s for {target} budget{whose}{shared}"


class RateLimiter:
    """Thread-safe, header-driven gate in front of every ESI request (see module docs)."""

    def __init__(
        self,
        *,
        safety_margin_tokens: int = 2,
        reserve_tokens: int = 2,
        error_limit_threshold: int = 10,
        error_limit_grace_s: float = 1.0,
        fallback_wait_s: float = 60.0,
        max_wait_s: float = 900.0,
        in_flight_poll_s: float = 0.05,
        route_groups: Mapping[str, str] = ROUTE_GROUP_HINTS,
        clock: Clock | None = None,
        on_wait: Callable[[WaitEvent], None] | None = None,
        shared: SharedBudget | None = None,
    ) -> None:
        self._margin = safety_margin_tokens
        self._reserve = reserve_tokens
        self._error_threshold = error_limit_threshold
        self._error_grace_s = error_limit_grace_s
        self._fallback_wait_s = fallback_wait_s
        self._max_wait_s = max_wait_s
        self._poll_s = in_flight_poll_s
        self._clock = clock or SYSTEM_CLOCK
        self._on_wait = on_wait
        self._shared = shared
        self._lock = threading.Lock()
        # route template -> group; None once ESI answered it without any bucket headers
        self._route_groups: dict[str, str | None] = dict(route_groups)
        self._buckets: dict[BucketKey, Bucket] = {}
        self._paused_until_s = NEVER
        self._error_remain: int | None = None
        self._error_capacity = 0  # the most errors left we saw: the window's size
        self._active: dict[int, tuple[float, WaitEvent]] = {}
        self._waited_s: defaultdict[str, float] = defaultdict(float)
        self._wait_count = 0
        self._recent: deque[WaitEvent] = deque(maxlen=32)

    def group_of(self, route: str, group_hint: str | None = None) -> str | None:
        """The group a route template belongs to: learned from ESI, else hinted."""
        with self._lock:
            return self._group_of(route, group_hint)

    def acquire(
        self, route: str, owner: int | None = None, group_hint: str | None = None
    ) -> Reservation:
        """Block until a request to ``route`` may go out.

        Raises ``EsiUnavailable`` when ESI asks for a pause longer than ``max_wait_s`` (a
        huge ``Retry-After``). Budget waits are never longer than the bucket's window, and
        several in a row are fine: other threads are being served meanwhile.
        """
        while True:
            self._sync_shared()
            with self._lock:
                now_s = self._clock.monotonic()
                decision = self._decide(route, owner, group_hint, now_s)
                if isinstance(decision, Reservation):
                    self._active.pop(threading.get_ident(), None)
                    break
                if isinstance(decision, WaitEvent):
                    self._note_wait(decision, now_s)
            if isinstance(decision, _LeaseOrder):
                self._lease(decision)
                continue
            if decision.reason in _CAPPED and decision.wait_s > self._max_wait_s:
                raise EsiUnavailable(f"gave up {decision.message} (over {self._max_wait_s:.0f} s)")
            if self._on_wait is not None and decision.reason != "in_flight":
                self._on_wait(decision)
            self._clock.sleep(decision.wait_s)
        self._lease_ahead(decision)
        return decision

    def release(
        self,
        reservation: Reservation,
        *,
        status: int,
        headers: Mapping[str, str],
        retry_after_s: float | None = None,
    ) -> SpendResult:
        """Book a response: free the reservation, learn the group, record cost and limits."""
        info = RateLimitInfo.from_headers(headers)
        errors = ErrorLimitInfo.from_headers(headers)
        closed_s: float | None = None
        self._share_probe(reservation, info, status)
        with self._lock:
            now_s = self._clock.monotonic()
            paused_s = self._note_error_limit(status, errors, retry_after_s, now_s)
            key = self._learn_key(reservation, info.group, status)
            spent = (
                0 if key is None else (info.used if info.used is not None else token_cost(status))
            )
            self._unreserve(reservation, spent)
            if key is not None:
                limit = (
                    None
                    if info.limit_tokens is None or info.window_s is None
                    else (info.limit_tokens, info.window_s)
                )
                bucket = self._bucket(key)
                bucket.record(now_s, spent=spent, limit=limit, remaining=info.remaining)
                if status == 429:
                    closed_s = self._fallback_wait_s if retry_after_s is None else retry_after_s
                    bucket.block(now_s, closed_s)
        self._share_blocks(key, closed_s, paused_s, now_s)
        return SpendResult(key, spent)

    def ready_in_s(self, route: str, owner: int | None, group_hint: str | None = None) -> float:
        """How long a request to ``route`` for ``owner`` would wait for its bucket now: 0
        when it may go (or the bucket is not known yet), ``inf`` when only responses in
        flight can free it. Reserves nothing: for a caller that may spend another bucket
        instead (a corporation's list, read with any of its directors' tokens)."""
        with self._lock:
            now_s = self._clock.monotonic()
            group = self._group_of(route, group_hint)
            bucket = None if group is None else self._buckets.get(BucketKey(group, owner))
            if bucket is None:
                return 0.0
            if bucket.blocked_until_s > now_s:
                return bucket.blocked_until_s - now_s
            if not bucket.known:
                return 0.0
            wait_s = bucket.seconds_until(self._need(bucket), now_s)
            return math.inf if wait_s is None else wait_s

    def available_tokens(self, route: str, owner: int | None = None) -> int | None:
        """Tokens ``route``'s bucket could spend now beyond the margin, as far as this
        process knows (``None`` before any response of the bucket; 0 while it is closed).
        For spending spare budget on other workers' behalf (:mod:`killcli.sync.helping`)."""
        with self._lock:
            now_s = self._clock.monotonic()
            group = self._group_of(route, None)
            bucket = None if group is None else self._buckets.get(BucketKey(group, owner))
            if bucket is None or not bucket.known:
                return None
            if bucket.blocked_until_s > now_s:
                return 0
            return max(0, bucket.available(now_s) - self._need(bucket))

    def cancel(self, reservation: Reservation) -> None:
        """Give a reservation back unused (the request got no response at all).

        A shared block still counts it as spent: ESI may have admitted the request (a
        timeout), and the other workers must not spend those tokens meanwhile.
        """
        with self._lock:
            self._unreserve(reservation, reservation.tokens if reservation.block else 0)

    def close(self) -> None:
        """Hand the shared blocks back (the process stops): other workers may spend them."""
        if self._shared is not None:
            self._shared.hand_back()

    @property
    def wait_reason(self) -> str | None:
        """Why a request is waiting right now (the longest current wait), or ``None``."""
        with self._lock:
            return self._current_reason(self._clock.monotonic())

    def snapshot(self, *, per_character: bool = True) -> LimiterSnapshot:
        """Bucket states (without the per-character ones if not ``per_character``), the
        error-limit pause and the waits imposed so far."""
        with self._lock:
            now_s = self._clock.monotonic()
            chosen = [(k, b) for k, b in self._buckets.items() if per_character or k.owner is None]
            return LimiterSnapshot(
                buckets=tuple(b.snapshot(now_s) for _, b in sorted(chosen)),
                error_limit_remain=self._error_remain,
                paused_for_s=max(0.0, self._paused_until_s - now_s),
                wait_count=self._wait_count,
                waited_s=MappingProxyType(dict(self._waited_s)),
                recent_waits=tuple(self._recent),
                wait_reason=self._current_reason(now_s),
                shared=None if self._shared is None else self._shared.view(),
            )

    # -- internals; every method below runs under self._lock ---------------------------

    def _decide(
        self, route: str, owner: int | None, group_hint: str | None, now_s: float
    ) -> Reservation | WaitEvent | _LeaseOrder:
        if self._paused_until_s > now_s:
            return self._wait("error_limit", self._paused_until_s - now_s, None)
        group = self._group_of(route, group_hint)
        if group is None:  # not rate limited as far as we know: ESI will tell us if it is
            return Reservation(route, owner, None, 0, probe=False)
        return self._decide_in(self._bucket(BucketKey(group, owner)), route, now_s)

    def _decide_in(
        self, bucket: Bucket, route: str, now_s: float
    ) -> Reservation | WaitEvent | _LeaseOrder:
        if bucket.blocked_until_s > now_s:
            return self._wait("retry_after", bucket.blocked_until_s - now_s, bucket.key)
        if not bucket.known and bucket.key.owner is None and self._shared is not None:
            # Another worker of the egress learnt the size already: no probe of our own.
            bucket.record(
                now_s, spent=0, limit=self._shared.limit_of(bucket.key.group), remaining=None
            )
        if not bucket.known:
            if bucket.probing:
                return self._wait("in_flight", self._poll_s, bucket.key)
            bucket.probing = True
            return self._reserve_in(bucket, route, probe=True)
        return self._decide_budget(bucket, route, now_s)

    def _decide_budget(
        self, bucket: Bucket, route: str, now_s: float
    ) -> Reservation | WaitEvent | _LeaseOrder:
        """A known, open bucket: enough tokens for a success and the margin?"""
        need = self._need(bucket)
        shared = bucket.key.owner is None and self._shared is not None
        if shared and not bucket.reported_short(need, now_s):
            # The ledger counts the other workers of the egress exactly; the header model
            # would count them again (as spent one window after each report).
            return self._pay_shared(bucket, route)
        wait_s = bucket.seconds_until(need, now_s)
        if wait_s == 0.0:
            return self._pay(bucket, route)
        if wait_s is None:
            return self._wait("in_flight", self._poll_s, bucket.key)
        return self._wait("bucket", wait_s, bucket.key)

    def _need(self, bucket: Bucket) -> int:
        """Tokens a request needs free: a success and the margin. The margin never makes a
        small bucket unusable, nor a request bigger than it."""
        limit = bucket.limit_tokens or 0
        return min(limit, self._reserve + min(self._margin, max(0, limit - self._reserve)))

    def _learn_key(
        self, reservation: Reservation, group: str | None, status: int
    ) -> BucketKey | None:
        """The bucket a response was charged to, per its headers; remembers the route's group."""
        if group is not None:
            self._route_groups[reservation.route] = group
            return BucketKey(group, reservation.owner)
        if reservation.key is not None and _definitive(status):
            # A hinted route that ESI does not (or no longer) limit: without this, every
            # request would stay a probe and the route would run one at a time.
            self._route_groups[reservation.route] = None
            return None
        return reservation.key

    def _pay(self, bucket: Bucket, route: str) -> Reservation | WaitEvent | _LeaseOrder:
        if bucket.key.owner is None and self._shared is not None:
            return self._pay_shared(bucket, route)
        return self._reserve_in(bucket, route, probe=False)

    def _pay_shared(self, bucket: Bucket, route: str) -> Reservation | WaitEvent | _LeaseOrder:
        """A per-IP bucket the header model allows: the egress's ledger must allow it too."""
        assert self._shared is not None
        paid = self._shared.pay(bucket.key.group, self._reserve)
        if isinstance(paid, NeedLease):
            return _LeaseOrder(bucket.key, bucket.limit_tokens or 0, bucket.window_s or 0.0)
        if isinstance(paid, SharedWait):
            wait_s = max(0.0, paid.until - self._shared.wall())
            return WaitEvent(paid.reason, wait_s, bucket.key, paid.holders)
        return self._reserve_in(bucket, route, probe=False, block=paid)

    def _lease(self, order: _LeaseOrder) -> None:
        """Lease the next shared block (database I/O: never under ``self._lock``)."""
        assert self._shared is not None
        self._shared.lease(
            order.key.group,
            limit_tokens=order.limit_tokens,
            window_s=order.window_s,
            reserve=self._reserve,
            margin=self._margin,
            ahead=order.ahead,
        )

    def _lease_ahead(self, reservation: Reservation) -> None:
        """Lease the next block before this one is spent (one thread, others go on)."""
        key = reservation.key
        if (
            self._shared is None
            or reservation.block is None
            or key is None
            or not self._shared.refill_due(key.group)
        ):
            return
        with self._lock:
            bucket = self._bucket(key)
            order = _LeaseOrder(key, bucket.limit_tokens or 0, bucket.window_s or 0.0, ahead=True)
        self._lease(order)

    def _sync_shared(self) -> None:
        """Every few hundred ms, learn the egress's 429s and error pause from the ledger."""
        if self._shared is None or not self._shared.refresh_due():
            return
        paused_until = self._shared.refresh()
        wall = self._shared.wall()
        if paused_until > wall:
            with self._lock:
                until_s = self._clock.monotonic() + paused_until - wall
                self._paused_until_s = max(self._paused_until_s, until_s)

    def _share_probe(self, reservation: Reservation, info: RateLimitInfo, status: int) -> None:
        """A probe of a per-IP bucket was paid from no block: book it in the ledger before
        the bucket opens to this process's other threads (they lease against the ledger)."""
        if (
            self._shared is None
            or not reservation.probe
            or reservation.owner is not None
            or info.group is None
            or info.window_s is None
        ):
            return
        spent = info.used if info.used is not None else token_cost(status)
        if spent > 0:
            self._shared.record(info.group, spent, info.limit_tokens, info.window_s)

    def _share_blocks(
        self, key: BucketKey | None, closed_s: float | None, paused_s: float | None, now_s: float
    ) -> None:
        """Tell the egress's other processes of a 429 or an error pause (after the lock)."""
        if self._shared is None:
            return
        self._shared.flush()
        wall = self._shared.wall()
        if closed_s is not None and key is not None and key.owner is None:
            self._shared.block(key.group, wall + closed_s)
        if paused_s is not None:
            self._shared.block(ERROR_LIMIT, wall + paused_s - now_s)

    def _reserve_in(
        self, bucket: Bucket, route: str, *, probe: bool, block: LeasedBlock | None = None
    ) -> Reservation:
        bucket.reserved_tokens += self._reserve
        return Reservation(
            route, bucket.key.owner, bucket.key, self._reserve, probe=probe, block=block
        )

    def _unreserve(self, reservation: Reservation, spent: int) -> None:
        if reservation.block is not None and self._shared is not None:
            self._shared.settle(reservation.block, reservation.tokens, spent)
        if reservation.key is None:
            return
        bucket = self._bucket(reservation.key)
        bucket.reserved_tokens = max(0, bucket.reserved_tokens - reservation.tokens)
        if reservation.probe:
            bucket.probing = False

    def _note_error_limit(
        self, status: int, errors: ErrorLimitInfo, retry_after_s: float | None, now_s: float
    ) -> float | None:
        """Pause on a 420 or when errors run low; returns the pause's end if it moved."""
        if errors.remain is not None:
            self._error_remain = errors.remain
            self._error_capacity = max(self._error_capacity, errors.remain)
        if status == 420:
            pause_s = next(
                s for s in (errors.reset_s, retry_after_s, self._fallback_wait_s) if s is not None
            )
        elif self._errors_running_low(errors.remain):
            pause_s = self._fallback_wait_s if errors.reset_s is None else errors.reset_s
        else:
            return None
        # The reset header is whole seconds: a little grace avoids waking just before it.
        until_s = now_s + pause_s + self._error_grace_s
        if until_s <= self._paused_until_s:
            return None
        self._paused_until_s = until_s
        return until_s

    def _group_of(self, route: str, group_hint: str | None) -> str | None:
        if route in self._route_groups:
            return self._route_groups[route]
        return group_hint

    def _errors_running_low(self, remain: int | None) -> bool:
        # Never more than half the window's size (the most errors left we saw): with a
        # small error limit, a fresh window must not look "low" before anything failed.
        threshold = min(self._error_threshold, self._error_capacity // 2)
        return remain is not None and remain <= threshold

    def _bucket(self, key: BucketKey) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(key)
        return bucket

    def _wait(self, reason: WaitReason, wait_s: float, key: BucketKey | None) -> WaitEvent:
        return WaitEvent(reason, wait_s, key)

    def _note_wait(self, event: WaitEvent, now_s: float) -> None:
        self._active[threading.get_ident()] = (now_s + event.wait_s, event)
        if event.reason != "in_flight":
            self._wait_count += 1
            self._recent.append(event)
        self._waited_s[event.reason] += event.wait_s

    def _current_reason(self, now_s: float) -> str | None:
        live = [(end_s, event) for end_s, event in self._active.values() if end_s > now_s]
        if not live:
            return None
        end_s, event = max(live, key=lambda item: item[0])
        return describe_wait(event.reason, event.key, end_s - now_s)
