"""The consume loop of the database queue: N worker threads and one heartbeat thread.

Each worker thread claims one job, runs the handler, settles the job, and claims the next;
an idle thread polls every ``poll_interval_s`` (or returns, when draining). Threads that
claim at the same moment share one transaction (:mod:`killcli.coalesce`), which also
claims up to half the concurrency more for the threads to come (given back unstarted
when the consumer stops; a run with ``max_jobs`` claims only what it runs; no claim
takes more than this consumer's fair share of the open jobs, the live consumers counted at
every heartbeat and by a claim after one that found nothing: :meth:`DatabaseBroker.claim`),
and the jobs done are acked behind, every :data:`ACK_EVERY_S` in one transaction, so a
worker running many short jobs at once does not pay one per job (a process killed before
an ack is written leaves its jobs to run again: handlers are idempotent). The heartbeat
thread extends the claims of running jobs (one statement for all of them), makes the jobs
of dead consumers of this host claimable (:meth:`DatabaseBroker.reclaim_dead`, also once
before the first claim, so a round started right after a crash finds them) and keeps this
consumer's ``consumer:`` lease, which :meth:`DatabaseBroker.stats` counts.

A database outage while claiming is waited out with backoff for ``outage_timeout_s``;
past that the consumer stops and :meth:`run` raises :class:`QueueUnavailable`. A job
that cannot be settled during an outage is simply claimed again after its visibility
timeout (handlers are idempotent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from killcli.coalesce import Coalescer, WriteBehind
from killcli.errors import QueueUnavailable
from killcli.queue.base import ConsumeResult, Handler, OutcomeKind, check_concurrency
from killcli.queue.policy import Budget, Tally, run_handler
from killcli.ticker import Ticker

if TYPE_CHECKING:
    from killcli.queue.dbqueue import DatabaseBroker, Delivery

logger = logging.getLogger(__name__)

MAX_OUTAGE_WAIT_S = 10.0
ACK_EVERY_S = 0.05  # jobs done gathered per ack transaction


class _InFlight:
    """The deliveries being handled now, shared with the heartbeat thread."""

    def __init__(self) -> None:
        self._items: set[Delivery] = set()
        self._lock = threading.Lock()

    def add(self, delivery: Delivery) -> None:
        with self._lock:
            self._items.add(delivery)

    def discard(self, delivery: Delivery) -> None:
        with self._lock:
            self._items.discard(delivery)

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True)
class _Taken:
    """What a thread's claim gave it: a job or none, poison buried, whether ready jobs
    were left to the other consumers (then a draining thread polls again)."""

    delivery: Delivery | None
    poisoned: int = 0
    deferred: bool = False


class DatabaseConsumer:
    """One :meth:`DatabaseBroker.consume` call."""

    def __init__(
        self,
        broker: DatabaseBroker,
        handler: Handler,
        *,
        concurrency: int,
        stop: threading.Event | None,
        drain: bool,
        max_jobs: int | None,
    ) -> None:
        self._broker = broker
        self._handler = handler
        self._concurrency = check_concurrency(concurrency)
        self._stop = stop or threading.Event()
        self._drain = drain
        self._budget = Budget(max_jobs)
        # Jobs claimed ahead for the threads to come (also in _inflight: kept claimed).
        self._ready: deque[Delivery] = deque()
        self._prefetch = 0 if max_jobs is not None else self._concurrency // 2
        self._tally = Tally()
        self._inflight = _InFlight()
        self._abort = threading.Event()  # set when the outage outlasted its timeout
        self._error: QueueUnavailable | None = None
        self._failure: Exception | None = None
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        # Threads that claim at once share one transaction; acks are written behind.
        self._consumers = 1  # live consumers of the queue (the fair share), this one included
        self._idle = True  # the last claim found nothing
        self._claims: Coalescer[None, _Taken] = Coalescer(self._claim_many)
        self._acks: WriteBehind[Delivery] = WriteBehind(
            self._ack_many, every_s=ACK_EVERY_S, name="killsync-queue-acks"
        )

    def run(self) -> ConsumeResult:
        lease_ttl_s = self._broker.heartbeat_s * 3
        self._broker.register_consumer(lease_ttl_s)  # also checks the database is there
        self._broker.reclaim_dead()
        try:
            with Ticker(
                self._broker.heartbeat_s,
                lambda: self._beat(lease_ttl_s),
                "killsync-queue-heartbeat",
            ):
                threads = [
                    threading.Thread(target=self._work, name=f"killsync-job-{i}")
                    for i in range(self._concurrency)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        finally:
            self._acks.close()
            self._give_back_ready()
            try:
                self._broker.unregister_consumer()
            except QueueUnavailable:
                logger.warning("could not unregister consumer; its lease will expire")
        if self._failure is not None:
            raise self._failure
        if self._error is not None:
            raise self._error
        return self._tally.result()

    def _halted(self) -> bool:
        return self._stop.is_set() or self._abort.is_set()

    def _work(self) -> None:
        try:
            self._claim_loop()
        except Exception as exc:  # a bug: stop every thread and raise it from run()
            logger.exception("consumer thread failed")
            with self._lock:
                self._failure = self._failure or exc
            self._abort.set()

    def _claim_loop(self) -> None:
        while not self._halted() and self._budget.take():
            taken = _Taken(self._take_ready())
            try:
                if taken.delivery is None:
                    taken = self._claims.submit(None)
                if taken.delivery is None:  # claimed ahead by the batch that ran before ours
                    taken = replace(taken, delivery=self._take_ready())
            except QueueUnavailable as exc:
                self._budget.give_back()
                self._wait_out(exc)
                continue
            self._recovered()
            self._tally.add("poisoned", taken.poisoned)
            if taken.delivery is not None:
                self._process(taken.delivery)
                continue
            self._budget.give_back()
            if self._drain and not taken.poisoned and not taken.deferred:
                return
            self._stop.wait(self._broker.poll_interval_s)

    def _claim_many(self, wanted: Sequence[None]) -> list[_Taken]:
        """One claim for every thread asking now: a job each while there are enough (the
        poison buried on the way is counted once)."""
        with self._lock:
            ahead = max(0, self._prefetch - len(self._ready))
        if self._idle:  # a round may have begun: count the consumers it finds ready
            self._consumers = self._broker.live_consumers()
        claimed = self._broker.claim(
            len(wanted) + ahead, held=len(self._inflight), consumers=self._consumers
        )
        deliveries = claimed.deliveries
        self._idle = not deliveries
        mine, extra = deliveries[: len(wanted)], deliveries[len(wanted) :]
        for delivery in extra:
            self._inflight.add(delivery)
        with self._lock:
            self._ready.extend(extra)
        found: list[Delivery | None] = [*mine, *[None] * (len(wanted) - len(mine))]
        return [
            _Taken(delivery, claimed.poisoned if i == 0 else 0, claimed.deferred)
            for i, delivery in enumerate(found)
        ]

    def _take_ready(self) -> Delivery | None:
        with self._lock:
            return self._ready.popleft() if self._ready else None

    def _give_back_ready(self) -> None:
        """The jobs claimed ahead that no thread started (a stop): claimable again now."""
        with self._lock:
            left, self._ready = list(self._ready), deque()
        if not left:
            return
        try:
            self._broker.unclaim(left)
        except QueueUnavailable:
            logger.warning(
                "could not give back %d jobs claimed ahead; they run after the visibility timeout",
                len(left),
            )
        for delivery in left:
            self._inflight.discard(delivery)

    def _process(self, delivery: Delivery) -> None:
        self._inflight.add(delivery)
        acking = False
        try:
            outcome = run_handler(self._handler, delivery.job)
            self._tally.add("handled")
            settled_as = self._broker.policy.settle(
                outcome, tries=delivery.tries, rng=self._broker.rng
            )
            if settled_as.kind is OutcomeKind.DONE:
                # Kept in flight (its claim extended) until the ack is written, then tallied.
                acking = True
                self._acks.post(delivery)
                return
            try:
                settled = self._broker.settle(delivery, settled_as)
            except QueueUnavailable:
                logger.warning(
                    "could not settle job %s; it will run again after the visibility timeout",
                    delivery.job.job_id,
                    exc_info=True,
                )
                return
            self._tally_settled(delivery, settled_as.kind, settled)
        finally:
            if not acking:
                self._inflight.discard(delivery)

    def _ack_many(self, deliveries: Sequence[Delivery]) -> None:
        try:
            acked = self._broker.ack_many(deliveries)
        except QueueUnavailable:
            logger.warning(
                "could not ack %d jobs; they run again after the visibility timeout",
                len(deliveries),
                exc_info=True,
            )
            acked = []
        for delivery in deliveries:
            self._inflight.discard(delivery)
        for delivery, settled in zip(deliveries, acked, strict=False):
            self._tally_settled(delivery, OutcomeKind.DONE, settled)

    def _tally_settled(self, delivery: Delivery, kind: OutcomeKind, settled: bool) -> None:
        if settled:
            self._tally.settled(kind)
        else:
            logger.warning(
                "job %s was claimed by another worker meanwhile (heartbeats "
                "missed the visibility timeout)",
                delivery.job.job_id,
            )

    def _beat(self, lease_ttl_s: float) -> None:
        self._broker.extend(self._inflight.snapshot())
        self._broker.reclaim_dead()
        self._broker.register_consumer(lease_ttl_s)
        self._consumers = self._broker.live_consumers()

    def _wait_out(self, exc: QueueUnavailable) -> None:
        now = time.monotonic()
        with self._lock:
            if self._failing_since is None:
                self._failing_since = now
            failing_for = now - self._failing_since
        if failing_for >= self._broker.outage_timeout_s:
            with self._lock:
                self._error = self._error or exc
            self._abort.set()
            return
        logger.warning("job queue unavailable for %.0f s, waiting: %s", failing_for, exc)
        wait = min(MAX_OUTAGE_WAIT_S, max(self._broker.poll_interval_s, failing_for / 2))
        self._stop.wait(min(wait, self._broker.outage_timeout_s - failing_for))

    def _recovered(self) -> None:
        with self._lock:
            self._failing_since = None
