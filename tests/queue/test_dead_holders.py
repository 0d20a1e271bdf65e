"""Leases and running jobs whose holder is gone: taken over at once when the holder was a
process of this host that is dead, after HOLDER_TIMEOUT_S when it was on another host."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from killcli.clock import ManualClock
from killcli.db import Database
from killcli.holders import this_owner
from killcli.queue import DatabaseBroker, Job
from killcli.queue.leases import (
    HEARTBEAT_S,
    HOLDER_TIMEOUT_S,
    LeaseKeeper,
    Leases,
    character_lease,
)
from killcli.queue.rabbit_consumer import LeaseBook
from tests.queue.conftest import FAST, consume, done_recording
from tests.test_holders import dead_owner

ELSEWHERE = "another-host:4242:123456.abcdef01"  # a well-formed owner of another host


def broker(db: Database, **options: Any) -> DatabaseBroker:
    options.setdefault("policy", FAST)
    options.setdefault("poll_interval_s", 0.02)
    return DatabaseBroker(db, **options)


@contextmanager
def statements_on(db: Database, table: str) -> Iterator[list[str]]:
    """The UPDATE statements the database is sent on ``table`` inside the block."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if sql.lstrip().upper().startswith(f"UPDATE {table.upper()}"):
            seen.append(sql)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


# -- leases --------------------------------------------------------------------------


def test_a_dead_local_holders_lease_is_taken_over_at_once(db: Database, now: ManualClock) -> None:
    leases = Leases(db, clock=now)
    name = character_lease(91000001)
    dead = dead_owner("job-1")
    assert leases.acquire(name, dead, ttl_s=HOLDER_TIMEOUT_S)  # ... and then it was killed
    assert leases.acquire(name, this_owner("job-2"), ttl_s=HOLDER_TIMEOUT_S)  # no waiting
    assert leases.holder(name) == this_owner("job-2")
    assert not leases.renew(name, dead, ttl_s=HOLDER_TIMEOUT_S)


def test_a_live_local_holder_keeps_its_lease(db: Database, now: ManualClock) -> None:
    leases = Leases(db, clock=now)
    name = character_lease(91000002)
    assert leases.acquire(name, this_owner("job-1"), ttl_s=HOLDER_TIMEOUT_S)
    assert not leases.acquire(name, this_owner("job-2"), ttl_s=HOLDER_TIMEOUT_S)
    assert leases.holder(name) == this_owner("job-1")


def test_another_hosts_holder_is_taken_over_once_it_stops_heartbeating(
    db: Database, now: ManualClock
) -> None:
    name = character_lease(91000003)
    there = LeaseKeeper(Leases(db, clock=now))  # the holder on another host, beating
    here = Leases(db, clock=now)
    try:
        assert there.acquire(name, f"{ELSEWHERE}:job-1")
        for _ in range(5):  # alive: a minute of heartbeats, never taken over
            now.advance(HEARTBEAT_S)
            there.beat()
            assert not here.acquire(name, this_owner("job-2"), ttl_s=HOLDER_TIMEOUT_S)
        # ... then the host stops beating: the lease holds for HOLDER_TIMEOUT_S more
        now.advance(HOLDER_TIMEOUT_S - 1)
        assert not here.acquire(name, this_owner("job-2"), ttl_s=HOLDER_TIMEOUT_S)
        now.advance(1)
        assert here.acquire(name, this_owner("job-2"), ttl_s=HOLDER_TIMEOUT_S)
    finally:
        there.close()


def test_many_at_once_take_the_free_and_the_dead_only(db: Database, now: ManualClock) -> None:
    leases = Leases(db, clock=now)
    names = [character_lease(c) for c in range(91000010, 91000014)]
    held = {names[1]: dead_owner("a"), names[2]: this_owner("b"), names[3]: f"{ELSEWHERE}:c"}
    assert leases.acquire_many(held, ttl_s=HOLDER_TIMEOUT_S) == set(held)
    mine = {n: this_owner("mine") for n in names}
    assert leases.acquire_many(mine, ttl_s=HOLDER_TIMEOUT_S) == {names[0], names[1]}
    assert leases.active("character:9100001") == {
        names[0]: this_owner("mine"),
        names[1]: this_owner("mine"),
        names[2]: this_owner("b"),
        names[3]: f"{ELSEWHERE}:c",
    }


def test_racing_takeovers_of_a_dead_lease_get_one_winner(db: Database) -> None:
    name = character_lease(91000020)
    assert Leases(db).acquire(name, dead_owner("job-1"), ttl_s=HOLDER_TIMEOUT_S)
    winners: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def contender(me: str) -> None:
        own = Database(db.url)  # a connection pool of its own, as another process has
        try:
            barrier.wait()
            if Leases(own).acquire(name, this_owner(me), ttl_s=HOLDER_TIMEOUT_S):
                winners.append(me)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=contender, args=(f"w{i}",)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(winners) == 1
    assert Leases(db).holder(name) == this_owner(winners[0])


def test_the_keeper_renews_every_lease_in_one_statement(db: Database, now: ManualClock) -> None:
    keeper = LeaseKeeper(Leases(db, clock=now))
    try:
        for c in range(91000030, 91000040):
            assert keeper.acquire(character_lease(c), this_owner(f"job-{c}"))
        keeper.release(character_lease(91000030), this_owner("job-91000030"))
        now.advance(HOLDER_TIMEOUT_S - 1)
        with statements_on(db, "leases") as updates:
            keeper.beat()
        assert len(updates) == 1
        now.advance(HOLDER_TIMEOUT_S - 1)  # past the first expiry, within the renewed one
        assert Leases(db, clock=now).count("character:910000") == 9
    finally:
        keeper.close()


# -- RabbitMQ's queued:/running: leases (owned by the job, not by a process) ------------


def test_a_redelivered_job_takes_its_rabbitmq_leases_back_at_once(
    db: Database, now: ManualClock
) -> None:
    def book() -> LeaseBook:
        return LeaseBook(db, "q", clock=now, queued_ttl_s=3600, running_ttl_s=HOLDER_TIMEOUT_S)

    job = Job.new(91000050)
    assert book().start(job)  # ... and the worker running it is SIGKILLed
    assert book().start(job)  # RabbitMQ redelivers it to another worker: not blocked
    assert not book().start(Job.new(91000050))  # another job of the character: a duplicate


# -- the database queue's running jobs ------------------------------------------------


def test_a_dead_consumers_jobs_are_claimable_at_once(db: Database, now: ManualClock) -> None:
    crashed = broker(db, clock=now, consumer_id=dead_owner("c0ffee"))
    crashed.publish([Job.new(1), Job.new(2)])
    lost = crashed.reserve(limit=2)  # claimed in the name of a process that is gone
    survivor = broker(db, clock=now)
    assert survivor.reserve() == []  # still within the visibility timeout ...
    assert survivor.reclaim_dead() == 2  # ... but its holder is provably dead
    again = survivor.reserve(limit=2)
    assert sorted(d.job.job_id for d in again) == sorted(d.job.job_id for d in lost)
    assert {d.tries for d in again} == {2}
    assert not crashed.ack(lost[0])  # the dead claim is void
    assert all(survivor.ack(d) for d in again)


def test_a_live_or_remote_consumers_jobs_stay_claimed_until_the_timeout(
    db: Database, now: ManualClock
) -> None:
    remote = broker(db, clock=now, consumer_id=f"{ELSEWHERE}:beef01")
    alive = broker(db, clock=now)
    remote.publish([Job.new(1)])
    alive.publish([Job.new(2)])
    assert len(remote.reserve()) == 1
    assert len(alive.reserve()) == 1
    survivor = broker(db, clock=now)
    assert survivor.reclaim_dead() == 0
    now.advance(HOLDER_TIMEOUT_S - 1)
    assert survivor.reserve(limit=2) == []
    now.advance(1)  # neither heartbeated: both visibility timeouts ran out
    assert len(survivor.reserve(limit=2)) == 2


def test_a_consumer_started_after_a_crash_runs_the_dead_consumers_jobs(db: Database) -> None:
    crashed = broker(db, consumer_id=dead_owner("dead01"))
    crashed.publish([Job.new(1), Job.new(2), Job.new(3)])
    assert len(crashed.reserve(limit=2)) == 2
    seen: list[int] = []
    result = consume(broker(db), done_recording(seen, "character_id"), drain=True)
    assert sorted(seen) == [1, 2, 3]
    assert result.done == 3


def test_one_heartbeat_extends_every_running_job(db: Database, now: ManualClock) -> None:
    queue = broker(db, clock=now)
    queue.publish([Job.new(c) for c in range(1, 6)])
    running = queue.reserve(limit=5)
    assert queue.ack(running[0])  # settled: no longer ours to extend
    now.advance(HOLDER_TIMEOUT_S - 1)
    with statements_on(db, "jobs") as updates:
        assert queue.extend(running) == 4
    assert len(updates) == 1
    now.advance(HOLDER_TIMEOUT_S - 1)  # past the claim, within the heartbeat's extension
    assert broker(db, clock=now).reserve(limit=5) == []
