"""Leases on SQLite and PostgreSQL: exclusive, re-entrant, expiring, race-free."""

from __future__ import annotations

import threading

from killcli.clock import ManualClock
from killcli.db import Database
from killcli.queue.leases import (
    Leases,
    character_lease,
    consumer_lease,
    lease_scope,
    queued_lease,
)


def test_a_lease_is_exclusive_until_released_or_expired(db: Database, now: ManualClock) -> None:
    leases = Leases(db, clock=now)
    name = character_lease(90000001)
    assert leases.acquire(name, "worker-a", ttl_s=60)
    assert not leases.acquire(name, "worker-b", ttl_s=60)
    assert leases.holder(name) == "worker-a"
    assert leases.acquire(name, "worker-a", ttl_s=60)  # re-entrant
    assert not leases.release(name, "worker-b")
    assert leases.release(name, "worker-a")
    assert leases.acquire(name, "worker-b", ttl_s=60)
    now.advance(61)
    assert leases.holder(name) is None
    assert leases.acquire(name, "worker-c", ttl_s=60)  # taken over once expired
    assert not leases.renew(name, "worker-b", ttl_s=60)
    assert leases.renew(name, "worker-c", ttl_s=60)


def test_renewing_keeps_a_lease_alive(db: Database, now: ManualClock) -> None:
    leases = Leases(db, clock=now)
    assert leases.acquire("job", "me", ttl_s=10)
    for _ in range(5):
        now.advance(8)
        assert leases.renew("job", "me", ttl_s=10)
    assert not leases.acquire("job", "other", ttl_s=10)
    now.advance(11)
    assert leases.acquire("job", "other", ttl_s=10)


def test_many_at_once_and_prefix_queries(db: Database, now: ManualClock) -> None:
    leases = Leases(db, clock=now)
    first = {queued_lease("q_%", str(c)): f"job-{c}" for c in range(1, 6)}
    assert leases.acquire_many(first, ttl_s=30) == set(first)
    second = {queued_lease("q_%", str(c)): f"other-{c}" for c in range(4, 9)}
    assert leases.acquire_many(second, ttl_s=30) == {queued_lease("q_%", str(c)) for c in (6, 7, 8)}
    assert leases.acquire("queued:qx%:1", "unrelated", ttl_s=30)  # `_` and `%` are literal
    assert leases.count("queued:q_%:") == 8
    assert set(leases.active("queued:q_%:").values()) == {
        "job-1",
        "job-2",
        "job-3",
        "job-4",
        "job-5",
        "other-6",
        "other-7",
        "other-8",
    }
    assert (
        leases.release_many({queued_lease("q_%", "1"): "job-1", queued_lease("q_%", "2"): "wrong"})
        == 1
    )
    now.advance(31)
    assert leases.count("queued:") == 0
    assert leases.purge_expired() == 8


def test_long_queue_names_fit_the_lease_column() -> None:
    long_name = "q" * 200
    assert len(queued_lease(long_name, str(2**62))) <= 200
    assert lease_scope(long_name) != lease_scope(long_name + "x")
    assert lease_scope("short") == "short"
    consumer = "h" * 60 + ":4194304:123456789012.abcdef01:abcdef"  # the longest owner
    assert len(consumer_lease("q" * 120, consumer)) <= 200
    assert consumer_lease("q" * 120, consumer) != consumer_lease("q" * 120, consumer + "x")


def test_racing_acquirers_get_one_winner(db: Database) -> None:
    url = db.url
    winners: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def contender(me: str) -> None:
        own = Database(url)  # a process of its own, as far as the database can tell
        try:
            barrier.wait()
            for round_ in range(10):
                if Leases(own).acquire(f"race-{round_}", me, ttl_s=60):
                    winners.append(f"race-{round_}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=contender, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(winners) == sorted(f"race-{r}" for r in range(10))
