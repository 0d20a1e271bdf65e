"""Retry policy and the consumer plumbing both backends share.

A failed job waits by the shared backoff (:mod:`killcli.backoff`): the n-th failure waits
between half and all of ``min(cap_s, base_s * 2**(n-1))``, so waits grow steadily while
workers that failed together (ESI downtime) spread out instead of coming back in one
burst. A handler's own delay (a ``Retry-After``) wins, at most ``max_delay_s``.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass

from killcli.backoff import Backoff
from killcli.queue.base import ConsumeResult, Handler, Outcome, OutcomeKind
from killcli.queue.jobs import Job

logger = logging.getLogger(__name__)

MAX_REASON_CHARS = 1000
SETTLED_COUNTS = {
    OutcomeKind.DONE: "done",
    OutcomeKind.RETRY: "retried",
    OutcomeKind.DEAD: "dead_lettered",
}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``max_attempts`` tries in all, then the dead letters."""

    max_attempts: int = 5
    base_s: float = 10.0
    cap_s: float = 3600.0
    max_delay_s: float = 86_400.0  # bound on a handler's own delay

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s < 0 or self.cap_s < self.base_s:
            raise ValueError(f"invalid retry policy {self}")

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.base_s, self.cap_s, max_server_s=self.max_delay_s)

    def backoff_s(self, failures: int, rng: random.Random) -> float:
        """The wait after the ``failures``-th failure (1-based), jittered."""
        return self.backoff.wait_s(failures, rng.random)

    def settle(self, outcome: Outcome, *, tries: int, rng: random.Random) -> Outcome:
        """What the broker does with a job whose ``tries``-th try ended with ``outcome``:
        the same outcome with its reason on one line and a retry's delay set, or dead
        when the tries are spent."""
        if outcome.kind is OutcomeKind.DONE:
            return outcome
        reason = one_line(outcome.reason) or "no reason given"
        if outcome.kind is OutcomeKind.DEAD:
            return Outcome.dead(reason)
        if tries >= self.max_attempts:
            return Outcome.dead(f"gave up after {tries} attempts: {reason}")
        delay_s = self.backoff.wait_s(tries, rng.random, server_s=outcome.delay_s)
        return Outcome.retry(reason, delay_s=delay_s)


def new_rng() -> random.Random:
    return random.Random()  # noqa: S311 - backoff jitter, not cryptography


def one_line(text: str) -> str:
    """A reason as stored and shown: one line, bounded."""
    return " ".join(text.split())[:MAX_REASON_CHARS]


def describe(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}")


def run_handler(handler: Handler, job: Job) -> Outcome:
    """Run a handler; an exception becomes a retry, so one bad job cannot kill a worker."""
    try:
        outcome = handler(job)
    except Exception as exc:  # any failure of a job is that job's retry
        logger.warning("job %s (character %s) failed", job.job_id, job.character_id, exc_info=True)
        return Outcome.retry(describe(exc))
    if not isinstance(outcome, Outcome):
        return Outcome.retry(f"handler returned {type(outcome).__name__}, not an Outcome")
    return outcome


class Budget:
    """At most ``limit`` handler runs (``None``: unlimited), shared by worker threads."""

    def __init__(self, limit: int | None) -> None:
        self._left = limit
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left is None:
                return True
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def give_back(self) -> None:
        with self._lock:
            if self._left is not None:
                self._left += 1

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self._left is not None and self._left <= 0


class Tally:
    """Thread-safe counters that become a :class:`ConsumeResult`."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def settled(self, kind: OutcomeKind) -> None:
        self.add(SETTLED_COUNTS[kind])

    def result(self) -> ConsumeResult:
        with self._lock:
            return ConsumeResult(**self._counts)
