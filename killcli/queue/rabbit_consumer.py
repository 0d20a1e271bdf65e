"""The consume loop of the RabbitMQ broker.

pika's ``BlockingConnection`` is not thread-safe, so one thread owns it (the thread that
called :meth:`RabbitBroker.consume`): it pumps ``process_data_events`` every fraction of a
second, which also keeps AMQP heartbeats flowing however long a job runs, takes
deliveries (``basic_qos(prefetch_count=N)``) and hands them to N worker threads. A worker
thread never touches pika: it queues its result and wakes the connection thread with
``add_callback_threadsafe``; the connection thread then publishes the retry or dead
letter (with a publisher confirm) and only then acks the delivery.

On a lost connection (broker restart, network drop, forced close) the broker requeues
every unacked delivery; the loop reconnects with backoff and redeclares the topology.
Handlers still running keep running, and when their job is redelivered here it is tied to
the running handler, or settled at once with the result it already produced, so a job
is not run twice by this worker. A redelivery to another worker does run again, which
is why handlers must be idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from queue import Empty, SimpleQueue

import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from killcli.backoff import Backoff
from killcli.clock import Clock
from killcli.coalesce import Coalescer, WriteBehind
from killcli.db import Database
from killcli.errors import KillsyncError, QueueUnavailable
from killcli.queue.base import ConsumeResult, Handler, Outcome, OutcomeKind, check_concurrency
from killcli.queue.jobs import Job, PoisonMessage, decode, peek_ids
from killcli.queue.leases import (
    HEARTBEAT_S,
    acquire_each,
    acquire_in,
    queued_lease,
    release_in,
    renew_in,
    running_lease,
)
from killcli.queue.policy import (
    Budget,
    RetryPolicy,
    Tally,
    describe,
    run_handler,
)
from killcli.queue.rabbit_topology import (
    ATTEMPTS_HEADER,
    FAILED_AT_HEADER,
    LINK_ERRORS,
    REASON_HEADER,
    Topology,
    close_quietly,
    describe_amqp,
    job_properties,
    publish,
)
from killcli.ticker import Ticker

logger = logging.getLogger(__name__)

Key = tuple[str, int]  # (job_id, attempt): one try of one job
FINISH_EVERY_S = 0.05  # finished jobs gathered per lease-release transaction
RECONNECT_BACKOFF = Backoff(initial_s=0.5, cap_s=30.0)


class LeaseBook:
    """The ``queued:`` and ``running:`` leases of the jobs this consumer runs.

    ``start`` takes the character's ``queued:`` lease for this job (re-entrant: it is this
    job's since publishing) and the ``running:`` lease; it fails when the character's
    ``queued:`` lease belongs to another job, which makes this delivery a duplicate.
    A ticker renews both while the job runs; ``finish`` drops them (keeping ``queued:``
    for a retry), behind (:class:`~killcli.coalesce.WriteBehind`): jobs finishing within
    :data:`FINISH_EVERY_S` share one transaction, and ``then`` runs once theirs is written
    (the job's ack). Both are owned by the job id, not by this process: when a worker dies,
    RabbitMQ redelivers its unacked jobs (the connection closes with the process) and
    whoever gets one takes both leases back at once (taking is re-entrant), so they never
    block the next round; a dead worker's ``running:`` leases only linger in
    :meth:`RabbitBroker.stats` for ``running_ttl_s``.
    """

    def __init__(
        self, db: Database, queue: str, *, clock: Clock, queued_ttl_s: float, running_ttl_s: float
    ) -> None:
        self._db = db
        self._queue = queue
        self._now = clock.now
        self.queued_ttl_s = queued_ttl_s
        self.running_ttl_s = running_ttl_s
        self._active: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._starts: Coalescer[Job, bool] = Coalescer(self._start_many)
        self._finishes: WriteBehind[_Finishing] = WriteBehind(
            self._finish_many, every_s=FINISH_EVERY_S, name="killsync-lease-releases"
        )

    def _names(self, job: Job) -> tuple[str, str]:
        return (
            queued_lease(self._queue, job.owner_key),
            running_lease(self._queue, job.owner_key),
        )

    def start(self, job: Job) -> bool:
        """Take the job's leases; False if its list's ``queued:`` lease is another
        job's. Jobs starting at once share one transaction (:mod:`killcli.coalesce`)."""
        if not self._starts.submit(job):
            return False
        with self._lock:
            self._active[job.job_id] = job
        return True

    def finish(
        self, job: Job, *, still_queued: bool, then: Callable[[], None] | None = None
    ) -> None:
        """Drop the job's leases (keep ``queued:`` if ``still_queued``), behind; ``then``
        runs once that is written, or failed (they expire then)."""
        with self._lock:
            self._active.pop(job.job_id, None)
        self._finishes.post(_Finishing(job, still_queued, then))

    def close(self) -> None:
        """Write the lease releases still behind (and run their ``then``)."""
        self._finishes.close()

    def _start_many(self, jobs: Sequence[Job]) -> list[bool]:
        with self._db.session() as session:
            now = self._now()
            started = acquire_each(
                session, [(self._names(job)[0], job.job_id) for job in jobs], self.queued_ttl_s, now
            )
            acquire_in(
                session,
                {
                    self._names(job)[1]: job.job_id
                    for job, ok in zip(jobs, started, strict=True)
                    if ok
                },
                self.running_ttl_s,
                now,
            )
        return started

    def _finish_many(self, finished: Sequence[_Finishing]) -> None:
        try:
            self._release_many([(f.job, f.still_queued) for f in finished])
        except KillsyncError:
            logger.warning(
                "could not release the leases of %d jobs; they expire", len(finished), exc_info=True
            )
        for f in finished:
            if f.then is not None:
                f.then()

    def _release_many(self, finished: Sequence[tuple[Job, bool]]) -> None:
        with self._db.session() as session:
            release_in(session, {self._names(job)[1]: job.job_id for job, _ in finished})
            release_in(
                session, {self._names(job)[0]: job.job_id for job, still in finished if not still}
            )
            renew_in(
                session,
                {self._names(job)[0]: job.job_id for job, still in finished if still},
                self.queued_ttl_s,
                self._now(),
            )

    def forget(self, raw: bytes) -> None:
        """Release the ``queued:`` lease of a poison message, if it names its job."""
        ids = peek_ids(raw)
        key = ids.owner_key
        if ids.job_id is None or key is None:
            return
        with self._db.session() as session:
            release_in(session, {queued_lease(self._queue, key): ids.job_id})

    def beat(self) -> None:
        with self._lock:
            jobs = list(self._active.values())
        if not jobs:
            return
        with self._db.session() as session:
            now = self._now()
            renew_in(session, {self._names(j)[1]: j.job_id for j in jobs}, self.running_ttl_s, now)
            renew_in(session, {self._names(j)[0]: j.job_id for j in jobs}, self.queued_ttl_s, now)


@dataclass(frozen=True)
class _Finishing:
    """A job whose leases are to be dropped, and what to do once they are."""

    job: Job
    still_queued: bool
    then: Callable[[], None] | None


@dataclass
class _Run:
    """A job handed to a worker thread, and the delivery to settle it with."""

    job: Job
    priority: int
    generation: int  # which connection the delivery tag belongs to
    tag: int


@dataclass(frozen=True)
class _Finished:
    key: Key
    outcome: Outcome  # settled by the retry policy
    skipped: bool = False  # a duplicate: settle without counting or leases
    released: bool = False  # its leases were dropped already (before the ack)


@dataclass(frozen=True)
class ConsumerOptions:
    concurrency: int
    drain: bool
    max_jobs: int | None
    reconnect_timeout_s: float
    poll_s: float = 0.2


class RabbitConsumer:
    """One :meth:`RabbitBroker.consume` call."""

    def __init__(
        self,
        *,
        connect: Callable[[], BlockingConnection],
        topology: Topology,
        book: LeaseBook,
        policy: RetryPolicy,
        rng: random.Random,
        clock: Clock,
        handler: Handler,
        stop: threading.Event | None,
        options: ConsumerOptions,
    ) -> None:
        self._connect, self._topology, self._book = connect, topology, book
        self._policy, self._rng, self._now, self._handler = policy, rng, clock.now, handler
        self._stop = stop or threading.Event()
        self._options = replace(options, concurrency=check_concurrency(options.concurrency))
        self._budget, self._tally = Budget(options.max_jobs), Tally()
        self._runs: dict[Key, _Run] = {}  # owned by the connection thread
        self._orphans: dict[Key, _Finished] = {}  # results whose delivery was lost
        self._finished: SimpleQueue[_Finished] = SimpleQueue()
        self._generation = 0
        self._conn: BlockingConnection | None = None
        self._chan: BlockingChannel | None = None
        self._consumer_tag: str | None = None
        self._drained = False
        self._pool: ThreadPoolExecutor | None = None
        self._ledger: ThreadPoolExecutor | None = None

    def run(self) -> ConsumeResult:
        self._open()  # a broker that is down at startup: QueueUnavailable, nothing started
        workers = ThreadPoolExecutor(self._options.concurrency, "killsync-job")
        ledger = ThreadPoolExecutor(1, "killsync-leases")
        beat_s = min(HEARTBEAT_S, self._book.running_ttl_s / 3)
        with workers, ledger, Ticker(beat_s, self._book.beat, "killsync-lease-heartbeat"):
            self._pool, self._ledger = workers, ledger
            try:
                self._loop()
            finally:
                self._close()  # unacked deliveries go back to the queue
                self._book.close()
        return self._tally.result()

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._budget.exhausted

    # -- the connection thread ---------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                self._serve()
            except LINK_ERRORS as exc:
                self._lost(exc)
                # Stopping: the lost deliveries are requeued already; just let the running
                # handlers finish (the executor waits for them).
                if self._stopping() or not self._reopen():
                    return
            else:
                return

    def _serve(self) -> None:
        assert self._conn is not None
        while True:
            self._conn.process_data_events(time_limit=self._options.poll_s)  # type: ignore[arg-type]  # stubs say int; pika takes float
            self._settle_finished()
            if self._stopping() or self._drained:
                self._cancel()
            elif self._options.drain and not self._runs:
                self._drained = self._queue_empty()
            if (self._stopping() or self._drained) and not self._runs:
                return

    def _queue_empty(self) -> bool:
        assert self._chan is not None
        assert self._conn is not None
        # Twice: the broker may hand us the next message while it answers the first count
        # (the count omits it, the delivery follows the answer). The second answer comes after
        # that delivery, which pika then holds for process_data_events.
        for _ in range(2):
            frame = self._chan.queue_declare(self._topology.name, passive=True)
            if frame.method.message_count:
                return False
        self._conn.process_data_events(time_limit=0)  # deliveries sent before those answers
        return not self._runs

    def _on_message(
        self,
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        tag = int(method.delivery_tag or 0)
        try:
            job = decode(body)
        except PoisonMessage as exc:
            self._bury_poison(tag, body, str(exc))
            return
        run = _Run(job, int(properties.priority or 0), self._generation, tag)
        key = (job.job_id, job.attempt)
        if key in self._orphans:
            self._settle(run, self._orphans.pop(key))  # finished here before the link broke
        elif key in self._runs:
            self._adopt(key, run)
        elif self._stopping() or self._drained or not self._budget.take():
            channel.basic_reject(tag, requeue=True)
        else:
            assert self._pool is not None
            self._runs[key] = run
            self._pool.submit(self._execute, key, job)

    def _adopt(self, key: Key, run: _Run) -> None:
        running = self._runs[key]
        if running.generation != self._generation:
            self._runs[key] = replace(running, generation=run.generation, tag=run.tag)
        else:  # the same try published twice; one run is enough
            assert self._chan is not None
            self._chan.basic_ack(run.tag)
            self._tally.add("skipped")

    def _settle_finished(self) -> None:
        plain: list[tuple[_Run, _Finished]] = []  # done: an ack and nothing to publish
        while True:
            try:
                finished = self._finished.get_nowait()
            except Empty:
                break
            run = self._runs.pop(finished.key)
            if run.generation != self._generation:
                # the broker requeued it when the link broke: settle the redelivery
                self._orphans[finished.key] = finished
            elif finished.skipped or finished.outcome.kind is OutcomeKind.DONE:
                plain.append((run, finished))
            else:
                self._settle(run, finished)
        if plain:
            self._ack_together(plain)

    def _ack_together(self, plain: list[tuple[_Run, _Finished]]) -> None:
        """Ack jobs done in one ``multiple`` ack up to the lowest delivery still running
        (every tag below it is settled), the others one by one: pika flushes its socket
        at each ack, which cost more than anything else of a re-sync's bookkeeping."""
        assert self._chan is not None
        running = [r.tag for r in self._runs.values() if r.generation == self._generation]
        below = min(running, default=None)
        tags = sorted(run.tag for run, _ in plain)
        together = [t for t in tags if below is None or t < below]
        try:
            if together:
                self._chan.basic_ack(together[-1], multiple=True)
            for tag in tags[len(together) :]:
                self._chan.basic_ack(tag)
        except LINK_ERRORS:
            for _, finished in plain:
                self._orphans[finished.key] = finished
            raise
        for run, finished in plain:
            self._acked(run, finished)

    def _settle(self, run: _Run, finished: _Finished) -> None:
        try:
            self._apply(run, finished)
        except LINK_ERRORS:
            self._orphans[finished.key] = finished
            raise

    def _apply(self, run: _Run, finished: _Finished) -> None:
        assert self._chan is not None
        job = run.job
        outcome = finished.outcome
        if finished.skipped:
            pass
        elif outcome.kind is OutcomeKind.RETRY:
            queue = self._topology.delay_queue(self._topology.tier_for(outcome.delay_s or 0.0))
            publish(
                self._chan,
                queue,
                job.next_attempt().encode(),
                job_properties(job.job_id, run.priority),
            )
        elif outcome.kind is OutcomeKind.DEAD:
            headers = self._dead_headers(outcome.reason, job.attempt + 1)
            publish(
                self._chan,
                self._topology.dead,
                job.encode(),
                job_properties(job.job_id, run.priority, headers),
            )
        self._chan.basic_ack(run.tag)  # only now: the retry or dead letter is confirmed
        self._acked(run, finished)

    def _acked(self, run: _Run, finished: _Finished) -> None:
        """The tally and the leases of a job whose delivery was just acked."""
        if finished.skipped:
            self._tally.add("skipped")
            return
        kind = finished.outcome.kind
        self._tally.settled(kind)
        if not finished.released:  # (behind: never blocks this thread)
            self._book.finish(run.job, still_queued=kind is OutcomeKind.RETRY)

    def _bury_poison(self, tag: int, body: bytes, reason: str) -> None:
        assert self._chan is not None
        assert self._ledger is not None
        logger.warning("poison message on %s: %s", self._topology.name, reason)
        publish(
            self._chan,
            self._topology.dead,
            body,
            job_properties(peek_ids(body).job_id, 0, self._dead_headers(f"poison: {reason}", 0)),
        )
        self._chan.basic_ack(tag)
        self._tally.add("poisoned")
        self._ledger.submit(self._forget, body)

    def _forget(self, body: bytes) -> None:
        try:
            self._book.forget(body)
        except KillsyncError:
            logger.warning("could not release the lease of a poison message", exc_info=True)

    def _dead_headers(self, reason: str, attempts: int) -> dict[str, object]:
        failed_at: datetime = self._now()
        return {
            REASON_HEADER: reason,
            ATTEMPTS_HEADER: attempts,
            FAILED_AT_HEADER: failed_at.isoformat(),
        }

    # -- worker threads ---------------------------------------------------------------

    def _execute(self, key: Key, job: Job) -> None:
        try:
            finished = self._attempt(key, job)
        except Exception as exc:  # never leave a delivery unsettled, or the loop waits forever
            logger.exception("job %s: bookkeeping failed", job.job_id)
            finished = _Finished(
                key, self._settled(job, Outcome.retry(f"bookkeeping failed: {describe(exc)}"))
            )
        if finished is not None:
            self._hand_over(finished)

    def _hand_over(self, finished: _Finished) -> None:
        """Give a result to the connection thread (any thread) and wake it."""
        self._finished.put(finished)
        conn = self._conn
        if conn is not None:
            # A closed connection: the connection thread is reconnecting and will look.
            with contextlib.suppress(*LINK_ERRORS):
                conn.add_callback_threadsafe(_wake_up)

    def _attempt(self, key: Key, job: Job) -> _Finished | None:
        """The job's result, or None when it is handed over once its leases are dropped."""
        if not self._book.start(job):
            # The character's queued lease names another job: that one will sync it.
            return _Finished(key, Outcome.done(), skipped=True)
        self._tally.add("handled")
        outcome = self._settled(job, run_handler(self._handler, job))
        if outcome.kind is OutcomeKind.RETRY:
            return _Finished(key, outcome)  # keeps queued: until the retry is settled
        # Free the character before the ack, not after it: a worker killed in between
        # then leaves a job that RabbitMQ redelivers and that runs once more (harmless),
        # never a queued: lease that blocks its character for queued_ttl_s with no job
        # behind it.
        finished = _Finished(key, outcome, released=True)
        self._book.finish(job, still_queued=False, then=lambda: self._hand_over(finished))
        return None

    def _settled(self, job: Job, outcome: Outcome) -> Outcome:
        return self._policy.settle(outcome, tries=job.attempt + 1, rng=self._rng)

    # -- connection lifecycle ---------------------------------------------------------

    def _open(self) -> None:
        conn = self._connect()
        try:
            chan = conn.channel()
            chan.confirm_delivery()
            self._topology.declare(chan)
            chan.basic_qos(prefetch_count=self._options.concurrency)
            tag = (
                None
                if self._stopping()
                else chan.basic_consume(self._topology.name, self._on_message)
            )
        except QueueUnavailable:
            close_quietly(conn)
            raise
        except LINK_ERRORS as exc:
            close_quietly(conn)
            raise QueueUnavailable(f"RabbitMQ: {describe_amqp(exc)}") from exc
        self._generation += 1
        self._conn, self._chan, self._consumer_tag = conn, chan, tag

    def _lost(self, exc: Exception) -> None:
        logger.warning("lost the RabbitMQ connection (%s); reconnecting", describe_amqp(exc))
        close_quietly(self._conn)
        self._conn = self._chan = None
        self._consumer_tag = None

    def _reopen(self) -> bool:
        """Reconnect with backoff; False when asked to stop meanwhile."""
        deadline = time.monotonic() + self._options.reconnect_timeout_s
        failures = 0
        while not self._stopping():
            try:
                self._open()
            except QueueUnavailable as exc:
                failures += 1
                if time.monotonic() + RECONNECT_BACKOFF.ceiling_s(failures) > deadline:
                    raise QueueUnavailable(
                        f"lost RabbitMQ and could not reconnect within "
                        f"{self._options.reconnect_timeout_s:.0f} s: {exc}"
                    ) from exc
                wait_s = RECONNECT_BACKOFF.wait_s(failures, self._rng.random)
                logger.warning("reconnecting to RabbitMQ in %.1f s: %s", wait_s, exc)
                self._stop.wait(wait_s)
            else:
                self._tally.add("reconnects")
                return True
        return False

    def _cancel(self) -> None:
        if self._consumer_tag is not None and self._chan is not None:
            self._chan.basic_cancel(self._consumer_tag)  # pending deliveries are requeued
            self._consumer_tag = None

    def _close(self) -> None:
        with contextlib.suppress(*LINK_ERRORS):  # closing anyway
            self._cancel()
        close_quietly(self._conn)
        self._conn = self._chan = None


def _wake_up() -> None:
    """Scheduled on the connection thread only to end its wait early."""
