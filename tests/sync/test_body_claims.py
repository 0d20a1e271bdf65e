"""Body claims in the database: no killmail body fetched twice by the workers of one database.

The claims themselves on SQLite and PostgreSQL with a manual clock; two sync engines on one
database (each its own claim owner, as two processes are) against the simulator; and real
worker processes: three at once on shared killmails, and one killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from killcli.clock import ManualClock
from killcli.config import load_settings
from killcli.db import Database
from killcli.db.models import BodyClaim, Lease
from killcli.db.models import Job as JobRow
from killcli.holders import this_owner
from killcli.runtime import Runtime
from killcli.sync.claims import BodyClaims
from killsim import FaultPlan, SimServer
from tests.conftest import DbTarget, sim_environ
from tests.pipeline import RABBIT_URL, require_rabbitmq
from tests.sync.test_sync_engine import assert_matches_ground_truth
from tests.test_worker import assert_ground_truth_stored_once, queue_everyone

WORKER_TIMEOUT_S = 120


def claim_rows(db: Database) -> dict[int, str]:
    with db.session() as s:
        return {row.killmail_id: row.owner for row in s.scalars(select(BodyClaim))}


def dead_owner() -> str:
    """The owner string of a process of this host that has ended."""
    child = subprocess.run(
        [sys.executable, "-c", "from killcli.holders import this_owner; print(this_owner())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{child.stdout.strip()}:bodies.dead"


# -- the claims ------------------------------------------------------------------------------


@pytest.fixture
def now() -> ManualClock:
    """A wall clock that moves only when told to."""
    return ManualClock.at(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def engines(db: Database, now: ManualClock) -> Iterator[Callable[..., BodyClaims]]:
    """Claim owners on the test's database (two engines: two processes), closed after."""
    made: list[BodyClaims] = []

    def make(**options: Any) -> BodyClaims:
        options.setdefault("clock", now)
        made.append(BodyClaims(db, **options))
        return made[-1]

    yield make
    for claims in made:
        claims.close()


def test_a_claim_is_exclusive_until_it_expires(
    engines: Any, db: Database, now: ManualClock
) -> None:
    first, second = engines(ttl_s=10).open(), engines(ttl_s=10).open()
    assert first.take([3, 1, 2]) == {1, 2, 3}
    assert second.take([2, 3, 4]) == {4}
    assert first.take([1, 2]) == {1, 2}  # taking again is re-entrant
    now.advance(9.9)
    assert second.take([1, 2, 3]) == set()
    now.advance(0.2)  # not renewed: lapsed
    assert second.take([1, 2, 3]) == {1, 2, 3}
    assert claim_rows(db) == dict.fromkeys((1, 2, 3, 4), second.owner)


def test_renewal_keeps_every_running_sync_s_claims(engines: Any, now: ManualClock) -> None:
    mine, other = engines(ttl_s=10), engines(ttl_s=10)
    one, two = mine.open(), mine.open()
    one.take([1, 2])
    two.take([3])
    now.advance(8)
    assert mine.renew() == 3  # one statement for both syncs
    now.advance(8)
    assert other.open().take([1, 2, 3]) == set()


def test_saved_or_pending_bodies_release_their_claim_and_close_the_rest(
    engines: Any, db: Database
) -> None:
    claims = engines()
    held = claims.open()
    held.take([1, 2, 3])
    with db.session() as session:
        held.release_in(session, [1, 99])  # 99 is not ours: no cost, no effect
    assert set(claim_rows(db)) == {2, 3} and held.held == 2
    held.close()
    assert claim_rows(db) == {}
    assert claims.renew() == 0  # nothing to renew: the heartbeat writes nothing


def test_a_dead_local_holder_is_taken_over_at_once(engines: Any, db: Database) -> None:
    dead = engines(owner=dead_owner(), ttl_s=3600)
    dead.open().take([1, 2])
    dead.close()  # stops its heartbeat; its claims stay, valid for an hour
    alive = engines(owner=this_owner("bodies.alive"), ttl_s=3600)
    alive.open().take([3])
    taker = engines().open()
    assert taker.take([1, 2, 3]) == {1, 2}  # a live holder keeps its claim


def test_a_finished_sync_s_leftovers_are_taken_by_the_next_sync(engines: Any) -> None:
    claims, other = engines(ttl_s=3600), engines(ttl_s=3600)
    first = claims.open()
    first.take([1])
    claims.deactivate(first)  # its sync ended, but the delete did not happen (an error)
    assert other.open().take([1]) == set()  # another process waits for the expiry
    assert claims.open().take([1]) == {1}  # this engine knows that sync is over


def test_a_sync_s_claims_are_never_leftovers_while_it_takes_them(
    engines: Any, db: Database
) -> None:
    """Another sync of the engine meeting them between the insert and the commit must see
    a running holder: a finished one's leftovers are taken over."""
    claims = engines(ttl_s=3600)
    taker = claims.open()
    seen: list[bool] = []

    def at_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO BODY_CLAIMS"):
            seen.append(claims.has_lapsed(taker.owner))

    event.listen(db.engine, "before_cursor_execute", at_insert)
    try:
        assert taker.take([1, 2]) == {1, 2}
    finally:
        event.remove(db.engine, "before_cursor_execute", at_insert)
    assert seen == [False]
    assert not claims.has_lapsed(taker.owner)  # it holds them now
    taker.close()
    assert claims.has_lapsed(taker.owner)


# -- two engines on one database ---------------------------------------------------------


class Gate:
    """Progress that holds the sync at its first body until released (its claims taken)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def started(self, character_name: str) -> None:
        pass

    def pages(self, read: int, total: int) -> None:
        pass

    def bodies(self, done: int, total: int) -> None:
        self.reached.set()
        assert self.release.wait(30), "the test never opened the gate"

    def saving(self, killmails: int) -> None:
        pass


class Background:
    """``sync_character`` on a thread; ``result()`` re-raises what it raised."""

    def __init__(self, runtime: Runtime, character_id: int, **options: Any) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(runtime, character_id, options))
        self._thread.start()

    def _run(self, runtime: Runtime, character_id: int, options: dict[str, Any]) -> None:
        try:
            self.value = runtime.engine.sync_character(character_id, **options)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.error = exc

    def result(self) -> Any:
        self._thread.join(60)
        assert not self._thread.is_alive(), "the sync did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def two_sharing(sim: SimServer) -> tuple[int, int, set[int]]:
    """Two characters and the killmails both received."""
    first, second = list(sim.world.ground_truth())[:2]
    truth = sim.world.ground_truth()
    shared = set(truth[first]) & set(truth[second])
    assert shared, "the scenario must share killmails"
    return first, second, shared


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def fetched(sim: SimServer, ids: set[int]) -> bool:
    counts = sim.stats.snapshot().body_fetches
    return all(counts.get(k) for k in ids)


def hold_first_sync(
    sim: SimServer, holder: Runtime, waiter: Runtime
) -> tuple[Background, Background, set[int]]:
    """``holder`` syncs the first character and stops with its claims taken; ``waiter``
    syncs the second, fetches what only it has, and waits for the shared bodies; then
    the holder goes on. Returns both syncs and the shared ids."""
    first, second, shared = two_sharing(sim)
    gate = Gate()
    held = Background(holder, first, progress=gate)
    assert gate.reached.wait(30)
    waiting = Background(waiter, second)
    own = set(sim.world.ground_truth()[second]) - shared
    wait_until(lambda: fetched(sim, own), "the waiter's own bodies")
    time.sleep(0.3)  # it polls for the shared ones now
    gate.release.set()
    return held, waiting, shared


def test_a_body_claimed_by_another_worker_is_linked_when_it_lands(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim = start_sim("smoke", characters=2, killmails=40, shared_fraction=0.5)
    holder, waiter = wire(sim), wire(sim)  # two engines: two claim owners
    held, waiting, shared = hold_first_sync(sim, holder, waiter)
    first, second = held.result(), waiting.result()
    assert (first.status, second.status) == ("ok", "ok")
    assert second.figures.shared_elsewhere == len(shared)
    assert second.figures.claims_taken_over == 0
    assert max(sim.stats.snapshot().body_fetches.values()) == 1
    assert_matches_ground_truth(sim, db)
    assert claim_rows(db) == {}


def test_pending_at_the_holder_is_pending_at_the_waiter(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim = start_sim("smoke", characters=2, killmails=40, shared_fraction=0.5)
    holder, waiter = wire(sim), wire(sim)
    _, _, shared = two_sharing(sim)
    failing = min(shared)
    sim.faults.fail_body(failing, status=422, times=1)
    held, waiting, _ = hold_first_sync(sim, holder, waiter)
    first, second = held.result(), waiting.result()
    assert (first.status, second.status) == ("partial", "partial")
    assert [r.split(":")[0] for r in second.pending_reasons] == [str(failing)]
    assert "422" in second.pending_reasons[0]
    assert second.figures.claims_taken_over == 1  # released by the holder, not fetched
    stats = sim.stats.snapshot()  # a forced 422 is counted by route, not as a body served
    assert stats.count("/killmails/{killmail_id}/{killmail_hash}", 422) == 1
    assert failing not in stats.body_fetches  # and nobody fetched it again
    assert claim_rows(db) == {}


def test_an_expired_claim_is_taken_over_and_fetched_once(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim = start_sim("smoke", characters=2, killmails=30)
    runtime = wire(sim)
    cid = next(iter(sim.world.ground_truth()))
    ids = set(sim.world.ground_truth()[cid])
    gone = BodyClaims(db, owner="another-host:4242:-:bodies.x", ttl_s=1.5)
    gone.open().take(ids)
    gone.close()  # that host stops heartbeating: its claims lapse in 1.5 s
    started = time.monotonic()
    result = runtime.engine.sync_character(cid)
    assert time.monotonic() - started >= 1.0  # it waited for the expiry
    assert result.status == "ok"
    assert result.figures.claims_taken_over == len(ids)
    assert max(sim.stats.snapshot().body_fetches.values()) == 1
    assert_matches_ground_truth(sim, db, only=cid)
    assert claim_rows(db) == {}


def test_claims_of_a_dead_local_process_are_taken_over_at_once(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim = start_sim("smoke", characters=2, killmails=30)
    runtime = wire(sim)
    cid = next(iter(sim.world.ground_truth()))
    dead = BodyClaims(db, owner=dead_owner(), ttl_s=3600)
    dead.open().take(sim.world.ground_truth()[cid])
    dead.close()
    started = time.monotonic()
    result = runtime.engine.sync_character(cid)
    assert time.monotonic() - started < 5
    assert result.status == "ok"
    assert max(sim.stats.snapshot().body_fetches.values()) == 1
    assert_matches_ground_truth(sim, db, only=cid)


# -- worker processes ----------------------------------------------------------------------

DEPLOYMENTS = [
    pytest.param("sqlite", "database", id="sqlite-dbqueue"),
    pytest.param(
        "postgresql",
        RABBIT_URL,
        id="postgresql-rabbitmq",
        marks=[pytest.mark.postgres, pytest.mark.rabbitmq],
    ),
]


@pytest.fixture
def deployment(
    db: Database, db_target: DbTarget, broker: str, tmp_path: Path
) -> Iterator[Callable[[SimServer], dict[str, str]]]:
    """The environment of worker processes on this deployment; RabbitMQ queues deleted."""
    made: list[dict[str, str]] = []

    def environ(sim: SimServer) -> dict[str, str]:
        env = sim_environ(sim, tmp_path / "home", db_target.url)
        if broker != "database":
            env["KILLSYNC_BROKER_URL"] = require_rabbitmq()
            env["KILLSYNC_QUEUE_NAME"] = f"killsync-claims-{os.getpid()}-{time.monotonic_ns()}"
        made.append(env)
        return env

    yield environ
    for env in made:
        if "KILLSYNC_BROKER_URL" in env:
            from killcli.queue.rabbit import RabbitBroker

            settings = load_settings(environ=env)
            RabbitBroker(
                env["KILLSYNC_BROKER_URL"], db, queue_name=settings.queue_name
            ).delete_topology()


def start_workers(env: dict[str, str], count: int, *args: str) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "killcli", "worker", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def finish(workers: list[subprocess.Popen[str]]) -> None:
    for proc in workers:
        _, err = proc.communicate(timeout=WORKER_TIMEOUT_S)
        assert proc.returncode == 0, err


@pytest.mark.parametrize(("db_target", "broker"), DEPLOYMENTS, indirect=["db_target"])
def test_three_workers_fetch_each_shared_body_once(
    start_sim: Any, db: Database, deployment: Any
) -> None:
    sim = start_sim(
        "smoke", characters=9, killmails=270, shared_fraction=0.9, faults=FaultPlan(latency_ms=15)
    )
    env = deployment(sim)
    queue_everyone(sim, db, env)
    finish(start_workers(env, 3, "--drain", "--concurrency", "3"))
    stats = sim.stats.snapshot()
    assert stats.duplicate_body_fetches == 0
    assert_ground_truth_stored_once(sim, db)
    assert_matches_ground_truth(sim, db)  # every killmail linked to each of its characters
    assert claim_rows(db) == {}


@pytest.mark.parametrize(("db_target", "broker"), DEPLOYMENTS, indirect=["db_target"])
def test_claims_of_a_sigkilled_worker_do_not_delay_the_next_round(
    start_sim: Any, db: Database, deployment: Any
) -> None:
    sim = start_sim("smoke", characters=3, killmails=150, faults=FaultPlan(latency_ms=40))
    env = deployment(sim)
    queue_everyone(sim, db, env)
    [victim] = start_workers(env, 1, "--concurrency", "1")
    wait_until(
        lambda: len(sim.stats.snapshot().body_fetches) >= 10 and bool(claim_rows(db)),
        "the worker's first bodies",
    )
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=10)
    left = claim_rows(db)
    assert left  # killed while holding claims
    with db.session() as s:
        # Claims valid for an hour: only noticing the dead holder can take them at once.
        s.execute(update(BodyClaim).values(expires_at=datetime.now(UTC) + timedelta(hours=1)))
        # Leases and the job's visibility timeout are another story (tests/test_worker.py).
        s.execute(update(Lease).values(expires_at=datetime.now(UTC)))
        s.execute(update(JobRow).values(locked_until=datetime.now(UTC)))
    finish(start_workers(env, 1, "--drain", "--concurrency", "2"))
    assert_ground_truth_stored_once(sim, db)
    assert_matches_ground_truth(sim, db)
    assert claim_rows(db) == {}
