"""The RabbitMQ job queue (fleet deployments), with pika's blocking connection.

Queues, arguments and delay tiers are in :mod:`killcli.queue.rabbit_topology`; the
consume loop (threads, acks, reconnects) is in :mod:`killcli.queue.rabbit_consumer`.
Messages are persistent, published with publisher confirms and ``mandatory``, and carry
the job's priority; retries go through the delay queues, dead jobs to ``<name>.dead``
with the reason in the ``killsync-reason`` header.

**One job per list, across hosts.** A queue cannot be asked whether it holds a message
for character X, so the database keeps that fact, as a lease per list
``queued:<queue>:<owner>`` owned by the job id (the owner is the character's id, or
``corporation:<id>``: :attr:`~killcli.queue.jobs.Job.owner_key`; see
:mod:`killcli.queue.leases`):

* ``publish`` takes the leases of all its characters in one statement and publishes only
  the jobs whose lease it got; two ``killsync queue`` runs at once, on any hosts, split
  the characters between them and never both publish one;
* the consumer renews the lease while the job runs and while it waits for a retry, and
  releases it just before it acks the job as done or dead-letters it (a worker killed in
  between leaves a job that runs once more, never a character blocked with no job behind
  it); then the character can be queued again;
* a job delivered while its character's lease belongs to another job (its own lease had
  expired and the character was queued again) is acknowledged without running;
* the lease has a TTL (``queued_ttl_s``, 12 h by default) so that a message lost outside
  killsync (a purged queue) blocks its character for at most that long; a backlog older
  than the TTL may get a second job for a character, which the rule above then skips.

The consumer also holds ``running:<queue>:<owner>`` while a job runs (renewed every
few seconds, see :data:`~killcli.queue.leases.HEARTBEAT_S`), which is what
:meth:`RabbitBroker.stats` reports as running: AMQP itself only tells ready messages and
consumers.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.config import DEFAULT_QUEUE_NAME
from killcli.db import Database
from killcli.errors import KillsyncError, QueueUnavailable
from killcli.queue.base import (
    Broker,
    ConsumeResult,
    DeadLetterInfo,
    Handler,
    QueueStats,
    RequeueResult,
    check_priority,
    unique_by_owner,
)
from killcli.queue.dbqueue import default_consumer_id
from killcli.queue.jobs import Job, PoisonMessage, decode, peek_ids
from killcli.queue.leases import HOLDER_TIMEOUT_S, Leases, lease_scope, queued_lease
from killcli.queue.policy import RetryPolicy, new_rng
from killcli.queue.rabbit_consumer import ConsumerOptions, LeaseBook, RabbitConsumer
from killcli.queue.rabbit_topology import (
    ATTEMPTS_HEADER,
    FAILED_AT_HEADER,
    LINK_ERRORS,
    REASON_HEADER,
    Topology,
    close_quietly,
    connect,
    describe_amqp,
    job_properties,
    publish,
)

T = TypeVar("T")
PUBLISH_BATCH = 1000  # jobs per publishing transaction


class RabbitBroker(Broker):
    """Jobs in RabbitMQ, per-character dedupe in the database (see the module docstring).

    The first use connects and declares the topology; :meth:`open` does it up front so a
    broker that is down fails at startup with one :class:`QueueUnavailable` line.
    """

    def __init__(
        self,
        url: str,
        db: Database,
        *,
        queue_name: str = DEFAULT_QUEUE_NAME,
        policy: RetryPolicy | None = None,
        queued_ttl_s: float = 12 * 3600,
        running_ttl_s: float = HOLDER_TIMEOUT_S,
        reconnect_timeout_s: float = 300.0,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        consumer_id: str | None = None,
    ) -> None:
        self.url = url
        self.db = db
        self.queue_name = queue_name
        self.topology = Topology(queue_name)
        self.policy = policy or RetryPolicy()
        self.queued_ttl_s = queued_ttl_s
        self.running_ttl_s = running_ttl_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.clock = clock
        self.rng = rng or new_rng()
        self.consumer_id = consumer_id or default_consumer_id()
        self.leases = Leases(db, clock=clock)
        self._conn: BlockingConnection | None = None
        self._chan: BlockingChannel | None = None
        self._tx_chan: BlockingChannel | None = None  # on _conn, in transaction mode
        self._lock = threading.Lock()  # one thread at a time on the admin connection

    def open(self) -> RabbitBroker:
        """Connect and declare the topology now."""
        with self._admin():
            return self

    def close(self) -> None:
        with self._lock:
            close_quietly(self._conn)
            self._conn = self._chan = self._tx_chan = None

    def connection_name(self, role: str) -> str:
        """What RabbitMQ shows for our connections: ``killsync <role> <consumer id>``."""
        return f"killsync {role} {self.consumer_id}"

    # -- publishing ------------------------------------------------------------------

    def publish(self, jobs: Sequence[Job], *, priority: int = 0) -> int:
        check_priority(priority)
        fresh = unique_by_owner(jobs)
        if not fresh:
            return 0
        with self._admin():  # reach the broker before taking any lease
            owners = {queued_lease(self.queue_name, key): j.job_id for key, j in fresh.items()}
            taken = self._db_call(lambda: self.leases.acquire_many(owners, self.queued_ttl_s))
            ours = [j for key, j in fresh.items() if queued_lease(self.queue_name, key) in taken]
            sent = 0
            try:
                # Publisher confirms on a blocking channel wait for each message (~1 ms:
                # 100 s for 100,000 jobs); a transaction per batch is as safe (tx.commit-ok
                # comes once the broker has taken them all) and all-or-nothing per batch.
                tx = self._tx_channel()
                for start in range(0, len(ours), PUBLISH_BATCH):
                    batch = ours[start : start + PUBLISH_BATCH]
                    for job in batch:
                        tx.basic_publish(
                            "", self.queue_name, job.encode(), job_properties(job.job_id, priority)
                        )
                    tx.tx_commit()
                    sent += len(batch)
            finally:
                # A batch that failed was rolled back: free the lists of every job
                # not sent so a later run can queue them.
                self._release_quietly(ours[sent:])
        return sent

    def _tx_channel(self) -> BlockingChannel:
        if self._tx_chan is None or not self._tx_chan.is_open:
            assert self._conn is not None, "only inside _admin()"
            self._tx_chan = self._conn.channel()
            self._tx_chan.tx_select()
        return self._tx_chan

    def _release_quietly(self, jobs: Sequence[Job]) -> None:
        owners = {queued_lease(self.queue_name, j.owner_key): j.job_id for j in jobs}
        with contextlib.suppress(KillsyncError):  # else they expire after queued_ttl_s
            self.leases.release_many(owners)

    # -- consuming -------------------------------------------------------------------

    def consume(
        self,
        handler: Handler,
        *,
        concurrency: int = 1,
        stop: threading.Event | None = None,
        drain: bool = False,
        max_jobs: int | None = None,
    ) -> ConsumeResult:
        book = LeaseBook(
            self.db,
            self.queue_name,
            clock=self.clock,
            queued_ttl_s=self.queued_ttl_s,
            running_ttl_s=self.running_ttl_s,
        )
        options = ConsumerOptions(
            concurrency=concurrency,
            drain=drain,
            max_jobs=max_jobs,
            reconnect_timeout_s=self.reconnect_timeout_s,
        )
        consumer = RabbitConsumer(
            connect=lambda: connect(self.url, name=self.connection_name("consumer")),
            topology=self.topology,
            book=book,
            policy=self.policy,
            rng=self.rng,
            clock=self.clock,
            handler=handler,
            stop=stop,
            options=options,
        )
        return consumer.run()

    # -- operators -------------------------------------------------------------------

    def stats(self) -> QueueStats:
        with self._admin() as channel:
            ready, consumers, delayed, dead = self.topology.counts(channel)
        running = self._db_call(
            lambda: self.leases.count(f"running:{lease_scope(self.queue_name)}:")
        )
        return QueueStats(
            ready=ready, delayed=delayed, running=running, dead_letters=dead, consumers=consumers
        )

    def dead_letters(self, limit: int = 50) -> list[DeadLetterInfo]:
        with self._admin() as admin:
            peek = admin.connection.channel()
            try:
                messages = _get_all(peek, self.topology.dead, limit)
            finally:
                peek.close()  # nothing was acked: every message goes back where it was
        return [_dead_info(properties.headers or {}, body) for _, properties, body in messages]

    def purge_dead_letters(self) -> int:
        with self._admin() as channel:
            return int(channel.queue_purge(self.topology.dead).method.message_count or 0)

    def requeue_dead_letters(self) -> RequeueResult:
        requeued = dropped = kept = 0
        with self._admin() as channel:
            total = self.topology.declare_one(channel, self.topology.dead, {})
            taking = channel.connection.channel()
            try:
                messages = _get_all(taking, self.topology.dead, total)
                for method, _, body in messages:
                    try:
                        job = replace(decode(body), attempt=0)
                    except PoisonMessage:
                        kept += 1  # left unacked: it returns to the dead letters
                        continue
                    if self._requeue(channel, job):
                        requeued += 1
                    else:
                        dropped += 1
                    taking.basic_ack(method.delivery_tag)
            finally:
                taking.close()
        return RequeueResult(requeued=requeued, dropped=dropped, kept=kept)

    def _requeue(self, channel: BlockingChannel, job: Job) -> bool:
        name = queued_lease(self.queue_name, job.owner_key)
        if not self._db_call(lambda: self.leases.acquire(name, job.job_id, self.queued_ttl_s)):
            return False  # the list is queued already
        publish(channel, self.queue_name, job.encode(), job_properties(job.job_id, 0))
        return True

    def queued_owner_keys(self) -> set[str]:
        prefix = f"queued:{lease_scope(self.queue_name)}:"
        names = self._db_call(lambda: self.leases.active(prefix))
        return {name[len(prefix) :] for name in names}

    def delete_topology(self) -> None:
        """Delete every queue of this queue name, messages included (without declaring
        them first, so this also clears a queue declared with other arguments)."""
        self.close()
        connection = connect(self.url, name=self.connection_name("admin"))
        try:
            self.topology.delete(connection.channel())
        except LINK_ERRORS as exc:
            raise QueueUnavailable(f"RabbitMQ: {describe_amqp(exc)}") from exc
        finally:
            close_quietly(connection)

    # -- the admin connection -----------------------------------------------------------

    @contextmanager
    def _admin(self) -> Iterator[BlockingChannel]:
        with self._lock:
            try:
                yield self._admin_channel()
            except LINK_ERRORS as exc:
                close_quietly(self._conn)
                self._conn = self._chan = self._tx_chan = None
                raise QueueUnavailable(f"RabbitMQ: {describe_amqp(exc)}") from exc

    def _admin_channel(self) -> BlockingChannel:
        if self._chan is not None and self._chan.is_open and self._conn is not None:
            try:  # a blocking connection only notices a dropped socket when it does I/O
                self._conn.process_data_events(time_limit=0)
            except LINK_ERRORS:
                self._chan = self._tx_chan = None
            else:
                return self._chan
        close_quietly(self._conn)
        self._tx_chan = None
        self._conn = connect(self.url, name=self.connection_name("admin"))
        try:
            channel = self._conn.channel()
            channel.confirm_delivery()
            self.topology.declare(channel)
        except BaseException:
            close_quietly(self._conn)
            self._conn = None
            raise
        self._chan = channel
        return channel

    def _db_call(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except KillsyncError as exc:
            if isinstance(exc, QueueUnavailable):
                raise
            raise QueueUnavailable(f"the job queue's database is unavailable: {exc}") from exc


def _get_all(channel: BlockingChannel, queue: str, limit: int) -> list[tuple[Any, Any, bytes]]:
    """Up to ``limit`` messages, unacked (closing the channel returns them)."""
    messages: list[tuple[Any, Any, bytes]] = []
    while len(messages) < limit:
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        raw: Any = body  # the stubs say str; pika hands bytes
        messages.append((method, properties, raw.encode() if isinstance(raw, str) else raw))
    return messages


def _dead_info(headers: dict[str, Any], body: bytes) -> DeadLetterInfo:
    ids = peek_ids(body)
    reason = headers.get(REASON_HEADER, "")
    try:
        failed_at = datetime.fromisoformat(str(headers[FAILED_AT_HEADER]))
    except (KeyError, ValueError):
        failed_at = None
    return DeadLetterInfo(
        job_id=ids.job_id,
        character_id=ids.character_id,
        reason=reason.decode() if isinstance(reason, bytes) else str(reason),
        attempts=int(headers.get(ATTEMPTS_HEADER, 0) or 0),
        failed_at=failed_at,
        raw=body.decode("utf-8", errors="replace"),
        corporation_id=ids.corporation_id,
    )
