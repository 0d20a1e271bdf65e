"""The broker interface shared by the database queue and RabbitMQ.

A worker hands :meth:`Broker.consume` a handler ``Job -> Outcome`` and a concurrency N; the
broker runs up to N handlers at once on worker threads and settles each job from what the
handler returned. One :class:`Outcome` type says both what the handler wants and, once the
retry policy settled it (:meth:`killcli.queue.policy.RetryPolicy.settle`), what the broker
does:

* :meth:`Outcome.done` - acknowledged (removed) only now, after the handler returned;
* :meth:`Outcome.retry` (or any exception the handler raises) - tried again after an
  exponential backoff with jitter, until the retry policy's ``max_attempts``, then dead;
* :meth:`Outcome.dead` - straight to the dead letters with the reason (like poison).

Delivery is at least once: a worker that dies mid-job, or loses its broker connection, has
its job handed out again. Handlers must therefore be idempotent (the sync engine is: saves
are ``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import TracebackType

from killcli.errors import UsageError
from killcli.queue.jobs import Job, parse_owner_key

MAX_PRIORITY = 10  # RabbitMQ's x-max-priority; the database queue uses the same range


class OutcomeKind(StrEnum):
    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Outcome:
    """What becomes of a job: done (acknowledged), retried after ``delay_s``, or dead.

    Build with :meth:`done`, :meth:`retry`, :meth:`dead`. A handler's retry may leave
    ``delay_s`` unset (the policy's backoff decides) or set it (a ``Retry-After``, which
    wins); a settled retry always has it.
    """

    kind: OutcomeKind
    reason: str = ""
    delay_s: float | None = None

    @classmethod
    def done(cls) -> Outcome:
        return cls(OutcomeKind.DONE)

    @classmethod
    def retry(cls, reason: str, *, delay_s: float | None = None) -> Outcome:
        return cls(OutcomeKind.RETRY, reason, None if delay_s is None else max(0.0, delay_s))

    @classmethod
    def dead(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.DEAD, reason)


Handler = Callable[[Job], Outcome]


@dataclass(frozen=True)
class QueueStats:
    """Queue figures for ``killsync stats``.

    ``running`` counts jobs handed to a worker and not settled yet (RabbitMQ: unacked).
    ``consumers`` counts workers consuming now (the database queue: workers that
    heartbeated within their lease).
    """

    ready: int
    delayed: int
    running: int
    dead_letters: int
    consumers: int


@dataclass(frozen=True)
class DeadLetterInfo:
    """One dead job as operators see it; ``raw`` is the message as it was received."""

    job_id: str | None
    character_id: int | None
    reason: str
    attempts: int
    failed_at: datetime | None
    raw: str
    corporation_id: int | None = None  # a corporation's job (character_id None)


@dataclass(frozen=True)
class RequeueResult:
    """``requeued`` went back to the queue; ``dropped`` were for lists already queued;
    ``kept`` are poison, which cannot be requeued and stay dead."""

    requeued: int
    dropped: int
    kept: int


@dataclass(frozen=True)
class ConsumeResult:
    """What one :meth:`Broker.consume` call did.

    ``handled`` counts handler runs; ``skipped`` counts deliveries settled without running
    the handler (a duplicate of a job already running, or of a character whose job is
    another one); ``reconnects`` counts recovered broker connections.
    """

    handled: int = 0
    done: int = 0
    retried: int = 0
    dead_lettered: int = 0
    poisoned: int = 0
    skipped: int = 0
    reconnects: int = 0


class Broker(ABC):
    """A job queue. Built once per process by :func:`killcli.queue.open_broker`.

    Use as a context manager (or call :meth:`close`). The publishing and operator methods
    are meant for one thread; :meth:`consume` runs its own worker threads.
    """

    queue_name: str

    @abstractmethod
    def publish(self, jobs: Sequence[Job], *, priority: int = 0) -> int:
        """Enqueue jobs, skipping lists (:attr:`Job.owner_key`) that already have a job
        queued or running (and repeats within ``jobs``). Higher ``priority`` (0-10) goes
        first.
        Returns how many were published."""

    @abstractmethod
    def consume(
        self,
        handler: Handler,
        *,
        concurrency: int = 1,
        stop: threading.Event | None = None,
        drain: bool = False,
        max_jobs: int | None = None,
    ) -> ConsumeResult:
        """Run ``handler`` on up to ``concurrency`` jobs at once until ``stop`` is set,
        ``max_jobs`` handler runs have finished, or (``drain``) no job is ready and none
        is running. Delayed retries do not keep a draining consumer waiting. Jobs running
        when it stops are finished and settled first (a graceful drain)."""

    @abstractmethod
    def stats(self) -> QueueStats:
        """Current figures."""

    @abstractmethod
    def dead_letters(self, limit: int = 50) -> list[DeadLetterInfo]:
        """Dead jobs in the order they died, up to ``limit`` (they stay dead)."""

    @abstractmethod
    def purge_dead_letters(self) -> int:
        """Delete every dead job; returns how many."""

    @abstractmethod
    def requeue_dead_letters(self) -> RequeueResult:
        """Give every dead job a fresh start (attempt 0), unless its list is queued."""

    @abstractmethod
    def queued_owner_keys(self) -> set[str]:
        """The lists (:attr:`Job.owner_key`) with a job queued, delayed or running."""

    def queued_character_ids(self) -> set[int]:
        """Characters with a job queued, delayed or running."""
        return queued_ids(self.queued_owner_keys())[0]

    def queued_corporation_ids(self) -> set[int]:
        """Corporations with a job queued, delayed or running."""
        return queued_ids(self.queued_owner_keys())[1]

    def close(self) -> None:  # noqa: B027 - optional hook; the database queue has nothing to close
        """Release connections; the broker is unusable afterwards."""

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_priority(priority: int) -> int:
    """The priority if it is in 0-10; a usage error otherwise."""
    if not 0 <= priority <= MAX_PRIORITY:
        raise UsageError(f"priority must be between 0 and {MAX_PRIORITY}, got {priority}")
    return priority


def check_concurrency(concurrency: int) -> int:
    if concurrency < 1:
        raise UsageError(f"concurrency must be at least 1, got {concurrency}")
    return concurrency


def unique_by_owner(jobs: Sequence[Job]) -> dict[str, Job]:
    """The first job of each list (:attr:`Job.owner_key`), in order."""
    unique: dict[str, Job] = {}
    for job in jobs:
        unique.setdefault(job.owner_key, job)
    return unique


def queued_ids(keys: set[str]) -> tuple[set[int], set[int]]:
    """The characters and the corporations among owner keys."""
    characters: set[int] = set()
    corporations: set[int] = set()
    for key in keys:
        character_id, corporation_id = parse_owner_key(key)
        if character_id is not None:
            characters.add(character_id)
        elif corporation_id is not None:
            corporations.add(corporation_id)
    return characters, corporations
