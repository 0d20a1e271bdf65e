"""`killsync worker`: consume jobs, sync lists, settle each job after its last commit.

N syncs run at once in one process and share one ESI client (one rate limiter, one body
pool, one in-flight registry). A lease per character (and per corporation) in the database
keeps two workers, on any host, from syncing one list at once (its list budget is per
character, a corporation's per director). A job is a character's list, or a corporation's
(read with its directors' tokens, :mod:`killcli.sync.corporation`). How a job ends:

================================  =====================================================
sync ok / not modified            done
bodies left pending               done (pending bodies are retried by the next runs)
character needs login             done (marked; `killsync queue` skips it until login)
corporation without a director    done (marked; queued again when a director's roles
                                  check is due, or one logs in)
corporation disabled meanwhile    done
character / corporation gone      dead letter with the reason
lease held elsewhere              retry in a short while
ESI/SSO down, database down       retry with the broker's exponential backoff
anything else                     retry; after the broker's max attempts, dead letter
================================  =====================================================
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import timedelta

from killcli.db.types import utcnow
from killcli.errors import (
    CorporationDisabled,
    KillsyncError,
    NeedsLogin,
    NoDirector,
    PartialFailure,
    UsageError,
)
from killcli.holders import parse_owner, this_owner
from killcli.metrics import WorkerMetrics
from killcli.queue.base import Broker, ConsumeResult, Outcome
from killcli.queue.jobs import Job
from killcli.queue.leases import (
    HOLDER_TIMEOUT_S,
    SYNC_LEASE_PREFIXES,
    LeaseKeeper,
    Leases,
    character_lease,
    corporation_lease,
)
from killcli.runtime import Runtime
from killcli.sync import SyncOptions, SyncResult
from killcli.sync.corporation import CorporationSyncResult, sync_corporation
from killcli.sync.helping import BodyHelper
from killcli.sync.progress import ProgressRegistry
from killcli.sync.quick import QuickSync
from killcli.workerstatus import StatusReporter, live_workers

# The character lease outlives its holder's last heartbeat (every HEARTBEAT_S, by the
# LeaseKeeper) by at most this long, so a killed worker blocks its characters ~15 s, and
# not at all for a worker on this host (the lease of a dead local process is taken over).
LEASE_TTL_S = HOLDER_TIMEOUT_S
LEASE_BUSY_RETRY_S = 30.0
# What ends a job done although its sync raised: nothing to do until someone acts.
DONE_WHEN: tuple[tuple[type[KillsyncError], str], ...] = (
    (NeedsLogin, "needs_login"),  # marked; `killsync queue` skips it until login
    (NoDirector, "no_director"),  # marked; queued again when a roles check is due
    (CorporationDisabled, "disabled"),  # an operator turned it off after it was queued
)
# Syncs at once: sized for I/O, not CPU cores. Most of a sync is waiting for ESI (a 304
# takes one 30-80 ms round trip); the bodies go through the engine's own threads and the
# budget, so more syncs do not mean more body requests at once. bench/bench_resync.py,
# 2,000 characters with nothing new: 32 -> 297 characters/s on SQLite, 197 on PostgreSQL
# + RabbitMQ; 64 -> 440 and 322; 96 -> 429 and 374; 128 on PostgreSQL 363.
DEFAULT_CONCURRENCY = 96
# A worker of another egress this young may be claiming its first jobs: wait for its wants.
JUST_STARTED = timedelta(seconds=5)


@dataclass(frozen=True)
class JobReport:
    """One line per job for logs and the live view."""

    job_id: str
    owner: str  # the character's id, or "corporation <id>"
    name: str
    outcome: str  # done | retry | dead
    status: str  # the sync's status, or the error kind
    new: int
    pending: int
    elapsed_s: float
    reason: str = ""

    def line(self) -> str:
        text = (
            f"{self.owner} {self.name!r}: {self.status}, new {self.new}, "
            f"pending {self.pending}, {self.elapsed_s:.1f} s -> {self.outcome}"
        )
        return f"{text} ({self.reason})" if self.reason else text


def check_settled(result: ConsumeResult) -> None:
    """Raise :class:`PartialFailure` (exit 3) when a run left jobs unsettled.

    For runs that end by themselves (``--drain``, ``--max-jobs``): a job retried later or
    dead-lettered is work this run did not do, which cron and CI must be able to see.
    """
    left = {
        "retried": result.retried,
        "dead-lettered": result.dead_lettered,
        "unreadable (dead-lettered)": result.poisoned,
    }
    if any(left.values()):
        counts = ", ".join(f"{n} {what}" for what, n in left.items() if n)
        raise PartialFailure(
            f"{counts} of {result.handled + result.poisoned} jobs",
            hint="see `killsync stats` and the worker's log lines",
        )


@dataclass(frozen=True)
class WorkerResult(ConsumeResult):
    """What a worker's run did: its jobs, and the bodies it fetched and saved for syncs
    of workers on other egresses (:class:`killcli.sync.helping.BodyHelper`)."""

    bodies_for_others: int = 0


class Worker:
    """Turns jobs into syncs; one per process."""

    def __init__(
        self,
        runtime: Runtime,
        broker: Broker,
        *,
        on_report: Callable[[JobReport], None] | None = None,
        on_new_killmails: Callable[[], None] | None = None,
        metrics: WorkerMetrics | None = None,
        status: StatusReporter | None = None,
        progress: ProgressRegistry | None = None,
        lease_ttl_s: float = LEASE_TTL_S,
    ) -> None:
        self.runtime = runtime
        self.broker = broker
        self.leases = Leases(runtime.db)
        self.owner = this_owner()
        self.on_report = on_report or (lambda report: None)
        self.on_new_killmails = on_new_killmails  # e.g. deliver their events now
        self.metrics = metrics
        self.status = status
        self.progress = progress or ProgressRegistry()  # running syncs, for the live view
        self.keeper = LeaseKeeper(self.leases, ttl_s=lease_ttl_s)
        self.quick = QuickSync(runtime.db, runtime.esi, runtime.accounts, self.keeper)

    def run(
        self,
        *,
        concurrency: int,
        stop: threading.Event,
        drain: bool = False,
        max_jobs: int | None = None,
    ) -> WorkerResult:
        if self.status is not None:
            self.status.write()
        helper = BodyHelper(self.runtime.engine)
        helper.start()
        try:
            with self.status.keep_writing() if self.status is not None else nullcontext():
                result = self.broker.consume(
                    self.handle, concurrency=concurrency, stop=stop, drain=drain, max_jobs=max_jobs
                )
                helper.stop()
                if drain and max_jobs is None:  # the round's other bodies, if we have budget
                    helper.drain(stop, self.other_egresses_syncing)
                return WorkerResult(**asdict(result), bodies_for_others=helper.helped)
        finally:
            helper.stop()
            self.quick.close()  # the run records still behind, and their leases
            self.keeper.close()
            if self.status is not None:
                self.status.remove()

    def other_egresses_syncing(self) -> bool:
        """Whether workers leaving through other egresses are syncing (they hold sync
        leases) or have just started (they may be claiming jobs): their syncs may yet want
        bodies that our budget could fetch."""
        mine = self.runtime.engine.claims.egress
        me = None if self.status is None else self.status.worker_id
        others = [
            worker
            for worker in live_workers(self.runtime.db)
            if worker["worker_id"] != me and (worker["esi"] or {}).get("egress") not in (None, mine)
        ]
        if not others:
            return False
        if any(utcnow() - worker["started_at"] < JUST_STARTED for worker in others):
            return True
        syncing = {
            (holder.host, holder.pid)
            for prefix in SYNC_LEASE_PREFIXES
            for owner in self.leases.holders(prefix)
            if (holder := parse_owner(owner)) is not None
        }
        return any((worker["host"], worker["pid"]) in syncing for worker in others)

    def handle(self, job: Job) -> Outcome:
        if job.corporation_id is not None:
            return self._handle_corporation(job, job.corporation_id)
        assert job.character_id is not None, "a job names a character or a corporation"
        character_id = job.character_id
        started = time.monotonic()
        lease = character_lease(character_id)
        owner = this_owner(job.job_id)
        begun = self.quick.begin(character_id, lease, owner, ttl_s=self.keeper.ttl_s)
        if not begun.leased:
            return self._busy(job, lease, started)
        try:
            with self.progress.track(character_id) as tracker:
                quick = self.quick.attempt(begun, full=job.full, progress=tracker)
                result = quick.result or self.runtime.engine.sync_character(
                    character_id,
                    SyncOptions(full=job.full),
                    tracker,
                    first_page=quick.first_page,
                )
        except KillsyncError as exc:
            return self._failed(job, exc, started)
        finally:
            self.keeper.release(lease, owner)
        return self._settle(job, Outcome.done(), result.status, started, result=result)

    def _handle_corporation(self, job: Job, corporation_id: int) -> Outcome:
        """A corporation's list, under its lease, through the engine's one path."""
        started = time.monotonic()
        lease = corporation_lease(corporation_id)
        owner = this_owner(job.job_id)
        if not self.keeper.acquire(lease, owner):
            return self._busy(job, lease, started)
        try:
            with self.progress.track(corporation_id) as tracker:
                result = sync_corporation(
                    self.runtime.engine,
                    self.runtime.corporations,
                    corporation_id,
                    SyncOptions(full=job.full),
                    tracker,
                )
        except KillsyncError as exc:
            return self._failed(job, exc, started)
        finally:
            self.keeper.release(lease, owner)
        return self._settle(job, Outcome.done(), result.status, started, result=result)

    def _failed(self, job: Job, exc: KillsyncError, started: float) -> Outcome:
        """How a job whose sync raised ends (the table of the module docstring)."""
        for kind, status in DONE_WHEN:
            if isinstance(exc, kind):
                return self._settle(job, Outcome.done(), status, started, reason=exc.message)
        if isinstance(exc, UsageError):  # the character or corporation is gone, or no scope
            return self._settle(job, Outcome.dead(str(exc)), "refused", started)
        # ESI/SSO or the database down, or anything else: the broker's backoff
        return self._settle(job, Outcome.retry(str(exc)), type(exc).__name__, started)

    def _busy(self, job: Job, lease: str, started: float) -> Outcome:
        holder = self.leases.holder(lease) or "another worker"
        return self._settle(
            job,
            Outcome.retry(f"being synced by {holder}", delay_s=LEASE_BUSY_RETRY_S),
            "busy",
            started,
        )

    def _settle(
        self,
        job: Job,
        outcome: Outcome,
        status: str,
        started: float,
        *,
        result: SyncResult | CorporationSyncResult | None = None,
        reason: str = "",
    ) -> Outcome:
        elapsed = time.monotonic() - started
        figures = result.figures if result else None
        report = JobReport(
            job.job_id,
            str(job.character_id) if job.corporation_id is None else job.owner_label,
            result.owner_name if result else "",
            outcome.kind.value,
            status,
            figures.new if figures else 0,
            figures.pending if figures else 0,
            elapsed,
            reason or outcome.reason,
        )
        if self.metrics is not None:
            self.metrics.jobs.labels(outcome.kind.value).inc()
            self.metrics.sync_seconds.observe(elapsed)
            if figures:
                self.metrics.killmails_saved.inc(figures.new)
                self.metrics.pending.inc(figures.pending)
            self.metrics.observe_client(self.runtime.esi.stats, self.runtime.esi.limiter)
        self.on_report(report)
        if self.status is not None:
            self.status.job_done()
        if self.on_new_killmails is not None and figures is not None and figures.new:
            self.on_new_killmails()
        return outcome
