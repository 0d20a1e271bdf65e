"""Live progress of the syncs a process runs, read by `sync-user`'s bars and the worker's view.

The engine reports through its :class:`~killcli.sync.engine.SyncProgress` hooks; one
:class:`SyncTracker` per sync turns them into a frozen :class:`SyncState` that it swaps in
whole. A reader on another thread therefore always sees one consistent state, and a hook
costs one small allocation and no lock (it runs once per killmail). The registry's lock is
taken only when a sync starts or ends, when the rate limiter reports a wait
(:meth:`ProgressRegistry.waiting` is its ``on_wait``) and for a snapshot.

Waits come from the limiter's own :class:`~killcli.esi.ratelimit.WaitEvent`, so the text a
person reads is the limiter's ("waiting 48 s for ESI killmail budget"), counted down. Many
threads report the same wait; :meth:`ProgressRegistry.waiting` folds them into one and
calls ``on_notice`` once per wait longer than ``notice_after_s`` (the line printed under
cron or into a pipe instead of bars).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

from killcli.esi.buckets import BucketKey
from killcli.esi.headers import token_cost
from killcli.esi.ratelimit import RateLimiter, WaitEvent
from killcli.textsafe import sanitize

Phase = Literal["list", "bodies", "saving", "done"]
#: A wait shorter than this is the limiter pacing requests, not worth a line of its own.
NOTICE_AFTER_S = 5.0
#: What one body costs its bucket (a 200): turns a bucket's refill into killmails/s.
BODY_TOKENS = token_cost(200)
#: Reports of one wait from many threads end this close together (they asked one by one).
SAME_WAIT_S = 0.5
#: Waits remembered before the registry drops those that are over without a reader.
PRUNE_AT = 256

_WaitId = tuple[str, BucketKey | None]


@dataclass(frozen=True, slots=True)
class SyncState:
    """One running sync at one instant: who, which phase, how far."""

    character_id: int
    started_s: float
    character_name: str = ""
    phase: Phase = "list"
    pages_read: int = 0
    pages_total: int | None = None
    pages_at_s: float | None = None  # when the last page came
    bodies_done: int = 0
    bodies_total: int | None = None
    bodies_started_s: float | None = None
    bodies_at_s: float | None = None  # when the last body came
    #: Bodies already stored when fetching began: counted done, not fetched.
    bodies_base: int = 0

    @property
    def label(self) -> str:
        """``Name (id)``, the name sanitised (it comes from ESI)."""
        name = sanitize(self.character_name)
        return f"{name} ({self.character_id})" if name else str(self.character_id)

    @property
    def bodies_left(self) -> int | None:
        """Bodies still to fetch, once the plan is known."""
        return None if self.bodies_total is None else self.bodies_total - self.bodies_done

    def bodies_rate(self, now_s: float) -> float | None:
        """Killmails per second since fetching began, waits included (the honest mean);
        frozen once the phase is over."""
        if self.bodies_started_s is None:
            return None
        end_s = now_s if self.phase == "bodies" else self.bodies_at_s
        return _rate(self.bodies_done - self.bodies_base, self.bodies_started_s, end_s)

    def pages_rate(self, now_s: float) -> float | None:
        """List pages per second of the walk (frozen once the walk is over)."""
        return _rate(
            self.pages_read, self.started_s, now_s if self.phase == "list" else self.pages_at_s
        )


def _rate(count: int, start_s: float, end_s: float | None) -> float | None:
    return None if end_s is None or end_s <= start_s else count / (end_s - start_s)


@dataclass(frozen=True, slots=True)
class BudgetWait:
    """A wait the limiter imposes right now, and how fast its bucket refills."""

    event: WaitEvent
    until_s: float
    #: Killmail bodies per second the bucket sustains once empty (None: not a known bucket).
    refill_per_s: float | None = None

    def remaining_s(self, now_s: float) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.until_s - now_s)

    def message(self, now_s: float) -> str:
        """The limiter's own line, its seconds counted down to now."""
        return replace(self.event, wait_s=self.remaining_s(now_s)).message

    def blocks(self, state: SyncState) -> bool:
        """Whether this wait holds up ``state``: a character's own bucket holds that sync in
        any phase, the error limit every sync, a shared bucket the syncs fetching bodies."""
        key = self.event.key
        if key is None:
            return True
        if key.owner is not None:
            return key.owner == state.character_id
        return state.phase != "list"


@dataclass(frozen=True)
class ProgressSnapshot:
    """Every running sync (oldest first) and the waits in force, at ``now_s``."""

    now_s: float
    syncs: tuple[SyncState, ...]
    waits: tuple[BudgetWait, ...]

    def wait_for(self, state: SyncState) -> BudgetWait | None:
        """The longest wait holding up ``state``, if any."""
        blocking = [w for w in self.waits if w.blocks(state)]
        return max(blocking, key=lambda w: w.until_s, default=None)

    def eta_s(self, state: SyncState) -> float | None:
        """Seconds until the bodies are fetched; None when there is nothing to go on.

        Blocked: the wait plus the remaining bodies at the bucket's refill rate (after a
        wait, the bucket, not our threads, sets the pace). Otherwise: the remaining bodies
        at the mean rate so far.
        """
        left = state.bodies_left
        if left is None:
            return None
        wait = self.wait_for(state)
        if wait is not None:
            if wait.refill_per_s is None:
                return None
            return wait.remaining_s(self.now_s) + left / wait.refill_per_s
        rate = state.bodies_rate(self.now_s)
        if left == 0:
            return 0.0
        return left / rate if rate else None

    @property
    def longest_wait(self) -> BudgetWait | None:
        """The wait that ends last, if any."""
        return max(self.waits, key=lambda w: w.until_s, default=None)


class SyncTracker:
    """The engine's progress hooks for one sync, published to its registry."""

    def __init__(self, character_id: int, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.state = SyncState(character_id, started_s=clock())

    def started(self, character_name: str) -> None:
        """The character is loaded: its name is known."""
        self.state = replace(self.state, character_name=character_name)

    def pages(self, read: int, total: int) -> None:
        """A list page was read."""
        self.state = replace(
            self.state, phase="list", pages_read=read, pages_total=total, pages_at_s=self._clock()
        )

    def bodies(self, done: int, total: int) -> None:
        """A body was fetched (or the plan is known: the first call)."""
        state, now_s = self.state, self._clock()
        if state.bodies_started_s is None:
            state = replace(state, bodies_started_s=now_s, bodies_base=done)
        self.state = replace(
            state, phase="bodies", bodies_done=done, bodies_total=total, bodies_at_s=now_s
        )

    def saving(self, killmails: int) -> None:
        """A batch of killmails is being written."""
        self.state = replace(self.state, phase="saving")


class ProgressRegistry:
    """Thread-safe registry of the running syncs of one process and the waits they face."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        notice_after_s: float = NOTICE_AFTER_S,
        on_notice: Callable[[WaitEvent], None] | None = None,
    ) -> None:
        self._clock = clock
        self._notice_after_s = notice_after_s
        self._on_notice = on_notice
        self._lock = threading.Lock()
        self._trackers: dict[int, SyncTracker] = {}  # by id(): one character may run twice
        self._waits: dict[_WaitId, BudgetWait] = {}
        self._noticed_until: dict[_WaitId, float] = {}
        self._limiter: RateLimiter | None = None
        self._refill: dict[BucketKey, float] = {}  # bodies/s of each shared bucket

    def attach(self, limiter: RateLimiter | None) -> None:
        """The limiter whose bucket sizes tell how fast a bucket refills (for the ETA)."""
        self._limiter = limiter

    @contextmanager
    def track(self, character_id: int) -> Iterator[SyncTracker]:
        """A tracker to pass to ``sync_character``, listed while the block runs."""
        tracker = SyncTracker(character_id, self._clock)
        with self._lock:
            self._trackers[id(tracker)] = tracker
        try:
            yield tracker
        finally:
            tracker.state = replace(tracker.state, phase="done")
            with self._lock:
                del self._trackers[id(tracker)]

    def waiting(self, event: WaitEvent) -> None:
        """The limiter's ``on_wait``: remember the wait; one notice per long new wait."""
        wait_id: _WaitId = (event.reason, event.key)
        now_s = self._clock()
        until_s = now_s + event.wait_s
        refill = self._refill_per_s(event.key)
        with self._lock:
            if len(self._waits) > PRUNE_AT:  # a worker nobody watches: per-character waits
                self._prune(now_s)
            known = self._waits.get(wait_id)
            # Many threads report one wait, each a little later: only a later end extends it.
            if known is None or known.until_s <= until_s - SAME_WAIT_S:
                self._waits[wait_id] = BudgetWait(event, until_s, refill)
            notice = self._is_new_long_wait(wait_id, event.wait_s, until_s)
        if notice and self._on_notice is not None:
            self._on_notice(event)

    def snapshot(self) -> ProgressSnapshot:
        """The running syncs, oldest first, and the waits still in force."""
        now_s = self._clock()
        with self._lock:
            syncs = tuple(
                sorted((t.state for t in self._trackers.values()), key=lambda s: s.started_s)
            )
            self._prune(now_s)
            waits = tuple(self._waits.values())
        return ProgressSnapshot(now_s, syncs, waits)

    def _prune(self, now_s: float) -> None:
        # Under self._lock: waits that are over, announcements no later wait can repeat.
        for wait_id in [k for k, w in self._waits.items() if w.until_s <= now_s]:
            del self._waits[wait_id]
        for wait_id in [
            k
            for k, until_s in self._noticed_until.items()
            if until_s + self._notice_after_s < now_s
        ]:
            del self._noticed_until[wait_id]

    def _is_new_long_wait(self, wait_id: _WaitId, wait_s: float, until_s: float) -> bool:
        # Under self._lock. A wait ending well after the one last announced is a new one.
        noticed_until = self._noticed_until.get(wait_id, -math.inf)
        if wait_s < self._notice_after_s or until_s < noticed_until + self._notice_after_s:
            return False
        self._noticed_until[wait_id] = until_s
        return True

    def _refill_per_s(self, key: BucketKey | None) -> float | None:
        """Bodies per second a shared bucket sustains, learned once per bucket (a bucket's
        size does not change); None for per-character buckets, which no body pays from."""
        if self._limiter is None or key is None or key.owner is not None:
            return None
        if key not in self._refill:
            # Outside self._lock; on_wait is called after the limiter released its own lock.
            for bucket in self._limiter.snapshot().buckets:
                if bucket.key == key and bucket.limit_tokens and bucket.window_s:
                    self._refill[key] = bucket.limit_tokens / bucket.window_s / BODY_TOKENS
        return self._refill.get(key)
