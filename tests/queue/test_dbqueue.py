"""The database job queue on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, insert, select

from killcli.clock import ManualClock
from killcli.db import Database
from killcli.db.models import Job as JobRow
from killcli.errors import QueueUnavailable, UsageError
from killcli.queue import DatabaseBroker, Job, Outcome, OutcomeKind, QueueStats, RetryPolicy
from tests.queue.conftest import FAST, BackgroundConsumer, consume, done_recording
from tests.test_holders import dead_owner


def jobs(*character_ids: int) -> list[Job]:
    return [Job.new(c) for c in character_ids]


def broker(db: Database, **options: object) -> DatabaseBroker:
    options.setdefault("policy", FAST)
    options.setdefault("poll_interval_s", 0.02)
    return DatabaseBroker(db, **options)  # type: ignore[arg-type]


def rows(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(JobRow)) or 0)


def test_priority_first_then_age(db: Database, now: ManualClock) -> None:
    queue = broker(db, clock=now)
    assert queue.publish(jobs(1, 2)) == 2
    now.advance(1)
    assert queue.publish(jobs(3), priority=5) == 1
    assert queue.publish(jobs(4), priority=9) == 1
    assert queue.publish(jobs(5)) == 1
    order = [d.job.character_id for d in queue.reserve(limit=10)]
    assert order == [4, 3, 1, 2, 5]


def test_consume_runs_jobs_in_priority_order(db: Database) -> None:
    queue = broker(db)
    queue.publish(jobs(10, 11, 12))
    queue.publish(jobs(20), priority=3)
    seen: list[int] = []
    result = consume(queue, done_recording(seen, "character_id"), drain=True)
    assert seen == [20, 10, 11, 12]
    assert (result.handled, result.done) == (4, 4)
    assert rows(db) == 0


def test_a_character_is_never_queued_twice(db: Database) -> None:
    queue = broker(db)
    assert queue.publish(jobs(1, 2, 2, 1)) == 2
    assert queue.publish(jobs(2, 3)) == 1
    claimed = queue.reserve()
    assert claimed[0].job.character_id == 1
    assert queue.publish(jobs(1)) == 0  # running counts as queued
    assert queue.queued_character_ids() == {1, 2, 3}
    assert queue.ack(claimed[0])
    assert queue.queued_character_ids() == {2, 3}
    assert queue.publish(jobs(1)) == 1
    other = broker(db, queue_name="another-queue")  # queues are independent
    assert other.publish(jobs(1, 2)) == 2


def test_racing_publishers_enqueue_each_character_once(db: Database) -> None:
    characters = list(range(1000, 1060))
    published: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def publisher(seed: int) -> None:
        own = Database(db.url)  # a separate `killsync queue` process, as the db sees it
        try:
            mine = characters[:]
            random.Random(seed).shuffle(mine)
            barrier.wait()
            for start in range(0, len(mine), 15):
                published.append(broker(own).publish(jobs(*mine[start : start + 15])))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(published) == len(characters)
    with db.session() as s:
        per_character = Counter(s.scalars(select(JobRow.character_id)))
    assert set(per_character) == set(characters)
    assert set(per_character.values()) == {1}


def test_a_failed_job_waits_for_its_backoff(db: Database, now: ManualClock) -> None:
    policy = RetryPolicy(max_attempts=5, base_s=10, cap_s=100)
    queue = broker(db, clock=now, policy=policy, rng=random.Random(3))
    queue.publish(jobs(7))
    waits: list[float] = []
    for tries in (1, 2, 3):
        (delivery,) = queue.reserve()
        assert delivery.tries == tries
        settlement = policy.settle(Outcome.retry("ESI 503"), tries=tries, rng=queue.rng)
        assert settlement.kind is OutcomeKind.RETRY
        assert settlement.delay_s is not None
        waits.append(settlement.delay_s)
        assert queue.settle(delivery, settlement)
        now.advance(settlement.delay_s - 0.01)
        assert queue.reserve() == []
        now.advance(0.02)
    assert 5 <= waits[0] <= 10 and 10 <= waits[1] <= 20 and 20 <= waits[2] <= 40


def test_retries_then_dead_letter_with_the_reason(db: Database) -> None:
    queue = broker(db)
    queue.publish(jobs(7))
    attempts: list[int] = []
    times: list[float] = []

    def failing(job: Job) -> Outcome:
        attempts.append(job.attempt)
        times.append(time.monotonic())
        raise RuntimeError(f"ESI said 502 on try {job.attempt + 1}")

    result = consume(queue, failing, max_jobs=3)
    assert attempts == [0, 1, 2]
    assert all(b - a >= 0.025 for a, b in itertools.pairwise(times))
    assert (result.retried, result.dead_lettered) == (2, 1)
    (dead,) = queue.dead_letters()
    assert dead.reason == "gave up after 3 attempts: RuntimeError: ESI said 502 on try 3"
    assert (dead.character_id, dead.attempts) == (7, 3)
    assert rows(db) == 0
    assert queue.stats().dead_letters == 1
    assert queue.queued_character_ids() == set()


def test_a_handler_can_bury_a_job_at_once(db: Database) -> None:
    queue = broker(db)
    queue.publish(jobs(8))
    result = consume(queue, lambda job: Outcome.dead("character deleted"), drain=True)
    assert result.dead_lettered == 1
    assert [d.reason for d in queue.dead_letters()] == ["character deleted"]


def test_poison_goes_straight_to_the_dead_letters(db: Database, now: ManualClock) -> None:
    queue = broker(db, clock=now)
    with db.session() as s:
        s.execute(
            insert(JobRow).values(
                job_id="bad-1",
                queue=queue.queue_name,
                character_id=5,
                priority=0,
                attempt=0,
                payload={"v": 9, "job_id": "bad-1", "character_id": 5},
                available_at=now.now(),
            )
        )
    queue.publish(jobs(6))
    seen: list[int] = []
    result = consume(queue, done_recording(seen, "character_id"), drain=True)
    assert (result.poisoned, result.done, seen) == (1, 1, [6])
    (dead,) = queue.dead_letters()
    assert dead.reason == "poison: unknown job version 9 (this killsync reads [1, 2])"
    assert (dead.job_id, dead.character_id, dead.attempts) == ("bad-1", 5, 1)
    assert '"v": 9' in dead.raw


def test_an_abandoned_claim_comes_back_after_the_visibility_timeout(
    db: Database, now: ManualClock
) -> None:
    crashed = broker(db, clock=now, visibility_timeout_s=30)
    crashed.publish(jobs(9))
    (lost,) = crashed.reserve()  # ... and the worker is SIGKILLed
    survivor = broker(db, clock=now, visibility_timeout_s=30)
    assert survivor.reserve() == []
    now.advance(29)
    assert survivor.reserve() == []
    now.advance(2)
    (again,) = survivor.reserve()
    assert (again.job.job_id, again.tries) == (lost.job.job_id, 2)
    assert not crashed.ack(lost)  # the old claim is void: it must not delete the new one
    assert survivor.ack(again)
    assert rows(db) == 0


def test_a_crashed_workers_job_is_run_by_another_consumer(db: Database) -> None:
    crashed = broker(db, visibility_timeout_s=0.5)
    crashed.publish(jobs(9))
    (lost,) = crashed.reserve()
    seen: list[int] = []
    result = consume(
        broker(db, visibility_timeout_s=0.5),
        done_recording(seen, "attempt"),
        max_jobs=1,
    )
    assert (seen, result.done) == ([1], 1)
    assert lost.tries == 1


def test_a_job_lost_too_often_is_buried(db: Database, now: ManualClock) -> None:
    queue = broker(db, clock=now, visibility_timeout_s=10)
    queue.publish(jobs(4))
    for _ in range(3):  # FAST.max_attempts claims, each by a worker that dies
        assert len(queue.reserve()) == 1
        now.advance(11)
    assert queue.reserve() == []
    (dead,) = queue.dead_letters()
    assert dead.reason.startswith("lost by 3 workers")


def test_heartbeats_keep_a_long_job_claimed(db: Database) -> None:
    queue = broker(db, visibility_timeout_s=1.0, heartbeat_s=0.2)
    queue.publish(jobs(11))
    started, calls = threading.Event(), []

    def slow(job: Job) -> Outcome:
        calls.append(job.job_id)
        started.set()
        time.sleep(2.5)  # 2.5 visibility timeouts
        return Outcome.done()

    worker = BackgroundConsumer(queue, slow, max_jobs=1)
    assert started.wait(10)
    rival = broker(db, visibility_timeout_s=1.0)
    stolen = []
    while worker._thread.is_alive():
        stolen += rival.reserve()
        time.sleep(0.1)
    assert worker.join().done == 1
    assert stolen == []
    assert len(calls) == 1
    assert rows(db) == 0


def test_concurrency_runs_n_jobs_at_once(db: Database) -> None:
    queue = broker(db)
    queue.publish(jobs(*range(1, 9)))
    lock, running, peak = threading.Lock(), [0], [0]

    def handler(job: Job) -> Outcome:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return Outcome.done()

    began = time.monotonic()
    result = consume(queue, handler, concurrency=4, drain=True)
    assert result.done == 8
    assert peak[0] == 4
    assert time.monotonic() - began < 1.5  # two rounds of 0.3 s, not eight


def test_stop_finishes_running_jobs_first(db: Database) -> None:
    queue = broker(db)
    queue.publish(jobs(1, 2, 3))
    started = threading.Event()

    def handler(job: Job) -> Outcome:
        started.set()
        time.sleep(0.3)
        return Outcome.done()

    worker = BackgroundConsumer(queue, handler)
    assert started.wait(10)
    result = worker.join(stop=True)
    assert result.done == 1
    assert queue.stats() == QueueStats(ready=2, delayed=0, running=0, dead_letters=0, consumers=0)


def test_stats(db: Database, now: ManualClock) -> None:
    queue = broker(db, clock=now, visibility_timeout_s=120)  # the running one outlives 61 s
    queue.publish(jobs(1, 2, 3, 4, 5))
    running, delayed, dead = queue.reserve(limit=3)
    assert queue.settle(delayed, Outcome.retry("later", delay_s=60))
    assert queue.settle(dead, Outcome.dead("gone"))
    assert queue.stats() == QueueStats(ready=2, delayed=1, running=1, dead_letters=1, consumers=0)
    assert running.job.character_id == 1
    now.advance(61)
    assert queue.stats() == QueueStats(ready=3, delayed=0, running=1, dead_letters=1, consumers=0)


def test_stats_count_live_consumers(db: Database) -> None:
    queue = broker(db)
    queue.publish(jobs(1))
    started, release = threading.Event(), threading.Event()

    def handler(job: Job) -> Outcome:
        started.set()
        release.wait(10)
        return Outcome.done()

    worker = BackgroundConsumer(queue, handler)
    assert started.wait(10)
    seen = broker(db).stats()
    release.set()
    worker.join(stop=True)
    assert (seen.running, seen.consumers) == (1, 1)
    assert broker(db).stats().consumers == 0


def test_operators_list_requeue_and_purge_dead_letters(db: Database, now: ManualClock) -> None:
    queue = broker(db, clock=now)
    queue.publish(jobs(1, 2, 3))
    for delivery in queue.reserve(limit=3):
        queue.dead_letter(delivery, f"broken {delivery.job.character_id}")
    with db.session() as s:
        s.execute(
            insert(JobRow).values(
                job_id="bad",
                queue=queue.queue_name,
                character_id=4,
                priority=0,
                attempt=0,
                payload={"nonsense": True},
                available_at=now.now(),
            )
        )
    assert queue.reserve() == []  # buries the poison row
    assert [d.reason for d in queue.dead_letters(limit=2)] == ["broken 1", "broken 2"]
    queue.publish(jobs(2))  # character 2 got a new job meanwhile
    result = queue.requeue_dead_letters()
    assert (result.requeued, result.dropped, result.kept) == (2, 1, 1)
    assert {(d.job.character_id, d.tries) for d in queue.reserve(limit=5)} == {
        (1, 1),
        (2, 1),
        (3, 1),
    }
    assert queue.purge_dead_letters() == 1
    assert queue.dead_letters() == []


def test_priorities_are_bounded(db: Database) -> None:
    with pytest.raises(UsageError):
        broker(db).publish(jobs(1), priority=11)
    with pytest.raises(UsageError):
        broker(db).publish(jobs(1), priority=-1)


def test_competing_consumers_run_each_job_once(db: Database) -> None:
    broker(db).publish(jobs(*range(1, 41)))
    seen: list[int] = []
    lock = threading.Lock()

    def handler(job: Job) -> Outcome:
        with lock:
            seen.append(job.owner_id)
        time.sleep(0.01)
        return Outcome.done()

    databases = [Database(db.url) for _ in range(2)]  # two worker processes
    try:
        workers = [
            BackgroundConsumer(broker(d), handler, concurrency=3, drain=True) for d in databases
        ]
        results = [w.join() for w in workers]
    finally:
        for d in databases:
            d.close()
    assert sorted(seen) == list(range(1, 41))
    assert sum(r.done for r in results) == 40


def test_jobs_claimed_ahead_go_back_unstarted_when_a_consumer_stops(db: Database) -> None:
    """A consumer claims ahead for its threads (half its concurrency); stopped, it gives
    those back: claimable at once by the next round, their claim not counted as a try."""
    queue = broker(db)
    queue.publish(jobs(*range(1, 31)))
    stop = threading.Event()
    first: list[tuple[int, int]] = []
    lock = threading.Lock()

    def handler(job: Job) -> Outcome:
        with lock:
            first.append((job.owner_id, job.attempt))
            if len(first) >= 8:
                stop.set()
        time.sleep(0.02)
        return Outcome.done()

    result = consume(queue, handler, concurrency=8, stop=stop)
    assert result.done == len(first) < 30
    assert queue.stats().running == 0  # nothing left claimed: neither run nor ahead
    second: list[tuple[int, int]] = []

    def record(job: Job) -> Outcome:
        second.append((job.owner_id, job.attempt))
        return Outcome.done()

    again = consume(queue, record, concurrency=8, drain=True)
    assert sorted(c for c, _ in first + second) == list(range(1, 31))  # each once
    assert again.done == len(second)
    assert {a for _, a in first + second} == {0}  # a claim given back is not a try


def test_done_jobs_are_acked_behind_and_all_acked_when_consume_returns(db: Database) -> None:
    queue = broker(db)
    queue.publish(jobs(*range(1, 51)))
    result = consume(queue, lambda job: Outcome.done(), concurrency=8, drain=True)
    assert result.done == 50  # each counted once its ack was written
    assert rows(db) == 0


def test_a_claim_takes_no_more_than_its_share_while_other_consumers_live(db: Database) -> None:
    """Three live consumers, 12 jobs: a claim of 48 takes 4 (the share of the open jobs,
    running ones included), a second claim while holding them is deferred, not "empty";
    a consumer whose process is gone is not counted."""
    first, second, third = broker(db), broker(db), broker(db)
    for consumer in (first, second, third):
        assert consumer.register_consumer(60)
    first.publish(jobs(*range(1, 13)))
    assert first.live_consumers() == 3
    taken = first.claim(48, consumers=3)
    assert len(taken.deliveries) == 4 and not taken.deferred
    held_back = first.claim(48, held=4, consumers=3)
    assert held_back.deliveries == [] and held_back.deferred
    assert len(second.claim(48, consumers=3).deliveries) == 4  # 12 open: 4 each
    assert len(third.claim(48, consumers=3).deliveries) == 4
    assert third.claim(48, held=4, consumers=3) == ([], 0, False)  # nothing ready: empty
    assert len(broker(db).claim(48).deliveries) == 0  # one consumer: no share, none left

    broker(db, consumer_id=dead_owner("consumer")).register_consumer(60)
    assert first.live_consumers() == 3  # a dead process of this host: not counted
    assert first.stats().consumers == 3  # nor by `stats`
    broker(db, consumer_id="elsewhere.example:4242:1.2:consumer").register_consumer(60)
    assert first.live_consumers() == 4  # another host's: counted until its lease expires
    assert first.stats().consumers == 4


def test_a_draining_consumer_runs_everything_beside_an_idle_one(db: Database) -> None:
    """The fair share holds a consumer back while another is registered: draining, it
    polls again instead of stopping with jobs left, and runs every job."""
    idle = broker(db)
    idle.register_consumer(60)  # alive, never claims
    queue = broker(db)
    queue.publish(jobs(*range(1, 21)))
    result = consume(queue, lambda job: Outcome.done(), concurrency=8, drain=True)
    assert result.done == 20
    assert rows(db) == 0


def test_counting_consumers_on_a_database_that_is_down_is_the_queue_unavailable() -> None:
    """The count a claim may make first fails as the claim would: waited out by the
    consumer (QueueUnavailable), not a crash of its thread."""
    down = Database("postgresql+psycopg://postgres@127.0.0.1:9/test")  # nothing listens
    try:
        with pytest.raises(QueueUnavailable):
            broker(down).live_consumers()
    finally:
        down.close()
