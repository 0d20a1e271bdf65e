"""A worker of another egress fetches the bodies a sync wants and cannot fetch yet (issue 11).

Two sync engines on one database, as two processes are: the first holds its sync after
its first block of bodies (its wants published); the second, of another egress, helps.
Then real worker processes on 127.0.0.1 and 127.0.0.2 against a small killmail bucket:
the worker with no job of its own spends its address's budget on the other's bodies.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from killcli.db import Database
from killcli.db.models import BodyClaim, BodyWant, Event, WorkerStatus
from killcli.db.types import utcnow
from killcli.esi.models import KillmailRef
from killcli.queue.dbqueue import DatabaseBroker
from killcli.queue.leases import Leases
from killcli.sync.claims import BodyClaims
from killcli.sync.helping import BodyHelper
from killcli.worker import Worker
from killcli.workerstatus import StatusReporter
from killsim import SimServer
from tests.conftest import sim_environ
from tests.sync.test_body_claims import Background, Gate, wait_until
from tests.sync.test_sync_engine import assert_matches_ground_truth
from tests.test_shared_budget import SMALL_BUCKETS, queue_is_empty
from tests.test_worker import assert_ground_truth_stored_once, queue_everyone, worker_process


def count(db: Database, model: type) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def one_long_list(start_sim: Any, killmails: int = 120) -> tuple[SimServer, int, set[int]]:
    sim: SimServer = start_sim("smoke", characters=1, killmails=killmails, shared_fraction=0.0)
    ((cid, ids),) = sim.world.ground_truth().items()
    return sim, cid, set(ids)


def held_after_its_first_block(wire: Any, sim: SimServer, cid: int) -> tuple[Background, Gate]:
    gate = Gate()
    return Background(wire(sim, KILLSYNC_EGRESS="host-a"), cid, progress=gate), gate


def test_an_idle_worker_of_another_egress_fetches_wanted_bodies_once(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim, cid, ids = one_long_list(start_sim)
    held, gate = held_after_its_first_block(wire, sim, cid)
    assert gate.reached.wait(30)
    block = 32  # the wanting engine's block: its per-stream bodies, 2 x 16 threads
    assert count(db, BodyWant) == len(ids) - block
    same = BodyHelper(wire(sim, KILLSYNC_EGRESS="host-a").engine)
    assert same.help_once() == 0  # one egress is one budget: nothing to gain
    helper = BodyHelper(wire(sim, KILLSYNC_EGRESS="host-b").engine)
    helped = helper.help_once()  # 4 bodies to learn the bucket, then blocks of 16
    assert helped == len(ids) - block
    gate.release.set()
    result = held.result()
    assert result.status == "ok"
    # Stored by the helper before the sync got to them: linked as already stored.
    assert (result.figures.fetched, result.figures.already) == (len(ids) - helped, helped)
    assert max(sim.stats.snapshot().body_fetches.values()) == 1
    assert_matches_ground_truth(sim, db)
    assert (count(db, BodyWant), count(db, BodyClaim)) == (0, 0)
    with db.session() as s:
        events = s.scalars(select(Event)).all()
    assert sorted(e.payload["killmail_id"] for e in events) == sorted(ids)
    assert {e.payload["character_id"] for e in events} == {cid}  # the wanting list's


def test_a_body_the_helper_cannot_fetch_is_given_back_to_the_sync(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim, cid, ids = one_long_list(start_sim, killmails=60)
    failing = min(ids)  # the oldest: the first a helper takes
    sim.faults.fail_body(failing, status=422, times=1)
    held, gate = held_after_its_first_block(wire, sim, cid)
    assert gate.reached.wait(30)
    helper = BodyHelper(wire(sim, KILLSYNC_EGRESS="host-b").engine)
    saved = helper.help_once()  # every want but the one that fails
    assert saved == len(ids) - 32 - 1
    with db.session() as s:
        assert failing not in set(s.scalars(select(BodyWant.killmail_id)))
    gate.release.set()
    result = held.result()
    assert result.status == "ok"  # the sync fetched it itself, and it worked this time
    assert result.figures.claims_taken_over == 0
    assert max(sim.stats.snapshot().body_fetches.values()) == 1
    assert_matches_ground_truth(sim, db)
    assert (count(db, BodyWant), count(db, BodyClaim)) == (0, 0)


def test_a_draining_helper_stays_while_other_egresses_want_bodies(
    start_sim: Any, wire: Any, db: Database
) -> None:
    """`worker --drain` ends once its queue is empty and nothing is wanted elsewhere: while
    wants are claimed by someone else it waits, and it takes those that come free."""
    sim, cid, ids = one_long_list(start_sim, killmails=60)
    held, gate = held_after_its_first_block(wire, sim, cid)
    assert gate.reached.wait(30)
    assert count(db, BodyWant) == len(ids) - 32
    with db.session() as s:
        wanted = set(s.scalars(select(BodyWant.killmail_id)))
    other = BodyClaims(db, owner="another-host:1:-:bodies.x", egress="host-c").open()
    assert other.take(wanted) == wanted  # a helper elsewhere has them all
    helper = BodyHelper(wire(sim, KILLSYNC_EGRESS="host-b").engine, poll_s=0.05)
    stop = threading.Event()
    draining = threading.Thread(target=helper.drain, args=(stop,))
    draining.start()
    time.sleep(1.0)
    assert draining.is_alive() and helper.helped == 0  # wanted, but nothing to take
    other.close()  # that helper gave up: its claims are gone, the wants stay
    draining.join(30)
    assert not draining.is_alive(), "the helper did not end once nothing was wanted"
    assert helper.helped == len(wanted)
    gate.release.set()
    assert held.result().status == "ok"
    assert max(sim.stats.snapshot().body_fetches.values()) == 1
    assert_matches_ground_truth(sim, db)
    assert (count(db, BodyWant), count(db, BodyClaim)) == (0, 0)


def test_a_sync_behind_others_claims_nothing_before_its_turn_and_is_helped(
    start_sim: Any, wire: Any, db: Database
) -> None:
    """Two syncs of one engine through a 40-token / 2 s killmail bucket: the second plans
    while the first's bodies hold every body thread (waiting for the bucket), so it
    publishes all of its bodies as wants and claims none of them; a worker on another
    address fetches some meanwhile, and the second sync links those when its turn comes."""
    sim: SimServer = start_sim(
        "ratelimit", characters=2, killmails=160, shared_fraction=0.0, buckets=SMALL_BUCKETS
    )
    truth = sim.world.ground_truth()
    first, second = sorted(truth, key=lambda c: len(truth[c]), reverse=True)
    # The first needs 3 windows or more: its keys wait in the threads for seconds.
    assert len(truth[first]) >= 3 * 20 and truth[second]
    runtime = wire(sim, KILLSYNC_EGRESS="host-a")
    ahead = Background(runtime, first)
    wait_until(runtime.engine.fetcher.backlogged, "the first sync's bodies in the threads")
    behind = Background(runtime, second)

    def wanted_of(character_id: int) -> set[int]:
        with db.session() as s:
            query = select(BodyWant.killmail_id).where(BodyWant.character_id == character_id)
            return set(s.scalars(query))

    wait_until(lambda: wanted_of(second) == set(truth[second]), "the second sync's wants")
    with db.session() as s:
        claimed = set(s.scalars(select(BodyClaim.killmail_id)))
    assert not claimed & set(truth[second])  # its turn has not come: nothing claimed
    helper = BodyHelper(
        wire(sim, KILLSYNC_EGRESS="host-b", KILLSYNC_SOURCE_ADDRESS="127.0.0.2").engine
    )
    helped = helper.help_once()
    ahead_result, behind_result = ahead.result(), behind.result()
    assert (ahead_result.status, behind_result.status) == ("ok", "ok")
    fetched = ahead_result.figures.fetched + behind_result.figures.fetched
    assert helped > 0 and fetched + helped == len(truth[first]) + len(truth[second])
    assert behind_result.figures.fetched < len(truth[second])  # some came from the helper
    stats = sim.stats.snapshot()
    assert max(stats.body_fetches.values()) == 1
    assert stats.rate_limited == 0
    assert_matches_ground_truth(sim, db)
    assert (count(db, BodyWant), count(db, BodyClaim)) == (0, 0)


def test_a_want_that_outlived_its_body_is_dropped_not_fetched(
    start_sim: Any, wire: Any, db: Database
) -> None:
    """A want published just after another worker saved its body (or left by a sync that
    found it stored) is not fetched again: the helper drops it, want and claim."""
    sim, cid, ids = one_long_list(start_sim, killmails=40)
    runtime = wire(sim, KILLSYNC_EGRESS="host-a")
    assert runtime.engine.sync_character(cid).status == "ok"
    stale = sorted(ids)[:5]
    claims = BodyClaims(db, owner="another-host:1:-:bodies.y", egress="host-c").open()
    hashes = sim.world.ground_truth()[cid]
    refs = [KillmailRef(k, hashes[k]) for k in stale]
    claims.want(refs, {"character_id": cid, "corporation_id": None})
    helper = BodyHelper(wire(sim, KILLSYNC_EGRESS="host-b").engine)
    assert helper.engine.claims.wanted_elsewhere(10) == []  # stored: not offered
    taker = helper.engine.claims.open()
    assert taker.take_wanted(stale) == set()  # taken anyway (a race): dropped at once
    taker.close()
    assert helper.help_once() == 0
    assert max(sim.stats.snapshot().body_fetches.values()) == 1
    assert (count(db, BodyWant), count(db, BodyClaim)) == (0, 0)
    claims.close()


def test_a_draining_worker_waits_for_the_wants_of_other_egresses_only_while_they_sync(
    start_sim: Any, wire: Any, db: Database
) -> None:
    """What keeps a drained worker for wants: a worker of another egress that holds sync
    leases or has just started; not one that is idle, nor one on our own egress."""
    sim, _, _ = one_long_list(start_sim, killmails=5)
    runtime = wire(sim, KILLSYNC_EGRESS="host-a")
    status = StatusReporter(db, runtime.esi.limiter)
    worker = Worker(runtime, DatabaseBroker(db), status=status)
    status.write()
    leases = Leases(db)

    def other(name: str, egress: str, age_s: float) -> None:
        with db.session() as s:
            s.add(
                WorkerStatus(
                    worker_id=f"{name}:4242:1",
                    host=name,
                    pid=4242,
                    started_at=utcnow() - timedelta(seconds=age_s),
                    updated_at=utcnow(),
                    jobs_handled=0,
                    esi={"egress": egress},
                )
            )

    assert not worker.other_egresses_syncing()  # alone
    other("same-egress", "host-a", 60)
    assert leases.acquire("character:1", "same-egress:4242:1.0123abcd:job-1", 60)
    assert not worker.other_egresses_syncing()  # syncing, but our budget is theirs
    other("elsewhere", "host-b", 60)
    assert not worker.other_egresses_syncing()  # another egress, idle
    assert leases.acquire("corporation:7", "elsewhere:4242:1.0123abcd:job-2", 60)
    assert worker.other_egresses_syncing()  # another egress, syncing
    assert leases.release("corporation:7", "elsewhere:4242:1.0123abcd:job-2")
    other("newcomer", "host-c", 1)
    assert worker.other_egresses_syncing()  # just started: may be claiming its jobs
    status.remove()
    worker.keeper.close()


def test_a_worker_with_no_job_spends_its_own_address_on_another_s_bodies(
    start_sim: Any, tmp_path: Path
) -> None:
    """SQLite and the database queue (the egress is keyed the same way on PostgreSQL):
    one character, 120 bodies through a 40-token / 2 s bucket per address. The worker on
    127.0.0.2 runs as a service on a queue of its own, so it gets no job (wants are in the
    database, whatever the queue); the one on 127.0.0.1 drains the job."""
    sim: SimServer = start_sim(
        "ratelimit",
        characters=1,
        killmails=120,
        shared_fraction=0.0,
        page_size=10,
        buckets=SMALL_BUCKETS,
    )
    url = f"sqlite:///{tmp_path / 'killsync.db'}"
    env = {**sim_environ(sim, tmp_path / "home", url), "KILLSYNC_BROKER_URL": "database"}
    db = Database(url)
    try:
        db.upgrade()
        service = worker_process(
            {**env, "KILLSYNC_SOURCE_ADDRESS": "127.0.0.2", "KILLSYNC_QUEUE_NAME": "helpers"}
        )
        try:
            wait_until(lambda: consumers(db, "helpers") == 1, "the service worker up", 30)
            queue_everyone(sim, db, env)
            drain = worker_process({**env, "KILLSYNC_SOURCE_ADDRESS": "127.0.0.1"}, "--drain")
            _, err = drain.communicate(timeout=120)
            assert drain.returncode == 0, err[-3000:]
        finally:
            service.send_signal(signal.SIGTERM)
            _, err = service.communicate(timeout=60)
        assert service.returncode == 0, err[-3000:]
        assert "bodies fetched for workers of other egresses" in err  # its stop line says so
        stats = sim.stats.snapshot()
        assert stats.rate_limited == 0 and stats.error_limited == 0
        per_ip = stats.tokens_spent["killmail"]
        assert per_ip.get("127.0.0.2", 0) > 0, per_ip  # it had no job: it helped
        assert per_ip.get("127.0.0.1", 0) > 0, per_ip
        assert_ground_truth_stored_once(sim, db)
        assert (count(db, BodyWant), count(db, BodyClaim)) == (0, 0)
    finally:
        db.close()
    assert queue_is_empty(env)


def consumers(db: Database, queue: str) -> int:
    from killcli.queue.dbqueue import DatabaseBroker

    return DatabaseBroker(db, queue_name=queue).stats().consumers
