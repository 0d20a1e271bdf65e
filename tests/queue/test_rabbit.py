"""The RabbitMQ job queue against the real broker (one queue name per test)."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import cast

import pika
import pytest

from killcli.clock import ManualClock
from killcli.db import Database
from killcli.errors import QueueUnavailable
from killcli.queue import Job, Outcome, QueueStats
from killcli.queue.rabbit import RabbitBroker
from killcli.queue.rabbit_topology import Topology
from tests.queue.conftest import (
    BackgroundConsumer,
    MakeRabbit,
    close_connections_named,
    consume,
    done_recording,
)

pytestmark = pytest.mark.rabbitmq


def jobs(*character_ids: int) -> list[Job]:
    return [Job.new(c) for c in character_ids]


def record(into: list[int]) -> Callable[[Job], Outcome]:
    def handler(job: Job) -> Outcome:
        into.append(job.owner_id)
        return Outcome.done()

    return handler


def raw_publish(url: str, queue: str, body: bytes) -> None:
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        connection.channel().basic_publish("", queue, body)


def test_topology_declaration_is_idempotent(
    make_rabbit: MakeRabbit, rabbitmq_url: str, queue_name: str
) -> None:
    first = make_rabbit().open()
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as connection:
        channel = connection.channel()
        Topology(queue_name).declare(channel)  # again, from a second connection
        Topology(queue_name).declare(channel)  # and again on the same channel
    second = make_rabbit().open()
    assert first.publish(jobs(1)) == 1
    assert second.stats() == QueueStats(ready=1, delayed=0, running=0, dead_letters=0, consumers=0)


def test_a_queue_declared_otherwise_is_reported(
    make_rabbit: MakeRabbit, rabbitmq_url: str, queue_name: str
) -> None:
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as connection:
        connection.channel().queue_declare(queue_name, durable=True)  # no x-max-priority
    with pytest.raises(QueueUnavailable) as caught:
        make_rabbit().open()
    assert f"queue {queue_name!r} exists with other arguments" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_priority_order(make_rabbit: MakeRabbit) -> None:
    queue = make_rabbit()
    queue.publish(jobs(10, 11, 12))
    queue.publish(jobs(20), priority=7)
    queue.publish(jobs(30), priority=3)
    seen: list[int] = []
    result = consume(queue, record(seen), concurrency=1, drain=True)
    assert seen == [20, 30, 10, 11, 12]
    assert result.done == 5


def test_a_character_is_never_queued_twice(make_rabbit: MakeRabbit) -> None:
    queue = make_rabbit()
    assert queue.publish(jobs(1, 2, 2)) == 2
    assert queue.publish(jobs(2, 3)) == 1
    assert queue.queued_character_ids() == {1, 2, 3}
    assert queue.stats().ready == 3
    seen: list[int] = []
    consume(queue, record(seen), concurrency=2, drain=True)
    assert sorted(seen) == [1, 2, 3]
    assert queue.queued_character_ids() == set()
    assert queue.publish(jobs(1)) == 1


def test_racing_publishers_enqueue_each_character_once(
    make_rabbit: MakeRabbit, db: Database
) -> None:
    characters = list(range(500, 540))
    databases = [Database(db.url) for _ in range(4)]  # four `killsync queue` processes
    brokers = [make_rabbit(db=d).open() for d in databases]
    published: list[int] = []
    barrier = threading.Barrier(len(brokers))

    def publisher(broker: RabbitBroker, seed: int) -> None:
        mine = characters[:]
        random.Random(seed).shuffle(mine)
        barrier.wait()
        for start in range(0, len(mine), 8):
            published.append(broker.publish(jobs(*mine[start : start + 8])))

    threads = [threading.Thread(target=publisher, args=(b, i)) for i, b in enumerate(brokers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sum(published) == len(characters)
        assert brokers[0].stats().ready == len(characters)
        assert brokers[0].queued_character_ids() == set(characters)
    finally:
        for d in databases:
            d.close()


def test_a_stale_duplicate_is_skipped(make_rabbit: MakeRabbit, now: ManualClock) -> None:
    queue = make_rabbit(clock=now, queued_ttl_s=60)
    assert queue.publish(jobs(5)) == 1
    now.advance(61)  # the lease ran out while the job waited in a long backlog
    assert queue.publish(jobs(5)) == 1
    seen: list[int] = []
    result = consume(queue, record(seen), drain=True)
    assert (seen, result.skipped, result.done) == ([5], 1, 1)


def test_retries_with_backoff_then_dead_letter(make_rabbit: MakeRabbit) -> None:
    queue = make_rabbit()
    (job,) = jobs(7)
    queue.publish([job])
    attempts: list[int] = []
    times: list[float] = []

    def failing(job: Job) -> Outcome:
        attempts.append(job.attempt)
        times.append(time.monotonic())
        raise RuntimeError(f"ESI said 502 on try {job.attempt + 1}")

    result = consume(queue, failing, max_jobs=3)
    assert attempts == [0, 1, 2]
    assert all(b - a >= 0.06 for a, b in itertools.pairwise(times))  # 64 ms tier
    assert (result.retried, result.dead_lettered) == (2, 1)
    (dead,) = queue.dead_letters()
    assert dead.reason == "gave up after 3 attempts: RuntimeError: ESI said 502 on try 3"
    assert (dead.job_id, dead.character_id, dead.attempts) == (job.job_id, 7, 3)
    assert dead.failed_at is not None
    assert queue.queued_character_ids() == set()
    assert queue.stats() == QueueStats(ready=0, delayed=0, running=0, dead_letters=1, consumers=0)


def test_poison_goes_straight_to_the_dead_letters(
    make_rabbit: MakeRabbit, rabbitmq_url: str, queue_name: str
) -> None:
    queue = make_rabbit().open()
    raw_publish(rabbitmq_url, queue_name, b"{oops")
    future = {**json.loads(Job.new(3).encode()), "v": 9}
    raw_publish(rabbitmq_url, queue_name, json.dumps(future).encode())
    queue.publish(jobs(4))
    seen: list[int] = []
    result = consume(queue, record(seen), drain=True)
    assert (result.poisoned, seen) == (2, [4])
    reasons = [d.reason for d in queue.dead_letters()]
    assert reasons[0].startswith("poison: not JSON")
    assert reasons[1] == "poison: unknown job version 9 (this killsync reads [1, 2])"
    assert queue.dead_letters()[0].raw == "{oops"


def test_an_unacked_job_returns_when_its_connection_closes(
    make_rabbit: MakeRabbit, rabbitmq_url: str, queue_name: str
) -> None:
    queue = make_rabbit()
    (job,) = jobs(9)
    queue.publish([job])
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as crashed:
        method, _, body = crashed.channel().basic_get(queue_name, auto_ack=False)
        assert method is not None
        assert cast(bytes, body) == job.encode()  # types-pika declares the body str
        assert queue.stats().ready == 0
    # the worker "died" without acking: RabbitMQ puts the job back
    seen: list[int] = []
    result = consume(queue, record(seen), drain=True)
    assert (seen, result.done) == ([9], 1)


def test_a_job_longer_than_the_heartbeat_completes(
    make_rabbit: MakeRabbit, rabbitmq_url: str
) -> None:
    queue = make_rabbit(url=f"{rabbitmq_url}?heartbeat=2")
    queue.publish(jobs(12))
    calls: list[int] = []

    def slow(job: Job) -> Outcome:
        calls.append(job.owner_id)
        time.sleep(5)  # two and a half heartbeat intervals
        return Outcome.done()

    result = consume(queue, slow, drain=True)
    assert (calls, result.done, result.reconnects) == ([12], 1, 0)
    assert queue.stats().ready == 0


def test_stats(make_rabbit: MakeRabbit, rabbitmq_url: str, queue_name: str) -> None:
    queue = make_rabbit().open()
    raw_publish(rabbitmq_url, queue_name, b"poison")
    queue.publish(jobs(1, 2, 3))
    started, release = threading.Event(), threading.Event()

    def handler(job: Job) -> Outcome:
        if job.character_id == 1:
            started.set()
            release.wait(10)
        if job.character_id == 2:
            return Outcome.retry("ESI downtime", delay_s=30)
        return Outcome.done()

    worker = BackgroundConsumer(queue, handler, concurrency=1, drain=True)
    assert started.wait(10)
    observer = make_rabbit()
    assert observer.stats() == QueueStats(
        ready=2, delayed=0, running=1, dead_letters=1, consumers=1
    )
    release.set()
    result = worker.join()
    assert (result.done, result.retried, result.poisoned) == (2, 1, 1)
    assert observer.stats() == QueueStats(
        ready=0, delayed=1, running=0, dead_letters=1, consumers=0
    )
    assert observer.queued_character_ids() == {2}  # still queued: waiting for its retry


def test_reconnects_after_a_forced_close_and_runs_every_job_once(
    make_rabbit: MakeRabbit,
) -> None:
    queue = make_rabbit(consumer_id=f"reconnect-{random.getrandbits(32)}")
    queue.publish(jobs(*range(1, 7)))
    calls: Counter[int] = Counter()
    lock, started, gate = threading.Lock(), threading.Event(), threading.Event()

    def handler(job: Job) -> Outcome:
        with lock:
            calls[job.owner_id] += 1
        started.set()
        gate.wait(10)  # the first two are running when the connection goes
        time.sleep(0.2)
        return Outcome.done()

    worker = BackgroundConsumer(queue, handler, concurrency=2, drain=True)
    assert started.wait(10)
    assert close_connections_named(queue.connection_name("consumer")) == 1
    gate.set()
    result = worker.join()
    assert result.reconnects >= 1
    assert calls == Counter(dict.fromkeys(range(1, 7), 1))
    assert result.done == 6
    assert queue.stats().ready == 0
    assert queue.queued_character_ids() == set()


def test_operators_list_requeue_and_purge_dead_letters(
    make_rabbit: MakeRabbit, rabbitmq_url: str, queue_name: str
) -> None:
    queue = make_rabbit()
    queue.publish(jobs(1, 2, 3))
    consume(queue, lambda job: Outcome.dead(f"broken {job.character_id}"), drain=True)
    raw_publish(rabbitmq_url, queue_name, b"poison")
    consume(queue, lambda job: Outcome.done(), drain=True)
    assert [d.reason for d in queue.dead_letters(limit=2)] == ["broken 1", "broken 2"]
    assert len(queue.dead_letters()) == 4  # listing leaves them where they are
    assert queue.publish(jobs(2)) == 1  # a dead job no longer blocks its character
    result = queue.requeue_dead_letters()
    assert (result.requeued, result.dropped, result.kept) == (2, 1, 1)
    assert queue.stats().ready == 3
    attempts: list[int] = []
    consume(queue, done_recording(attempts, "attempt"), drain=True)
    assert attempts == [0, 0, 0]
    assert queue.purge_dead_letters() == 1
    assert queue.dead_letters() == []
