"""Progress that tells the truth while waiting on the budget (issue 11, item 7).

Real syncs against the simulator with a compressed killmail bucket (10 bodies per window):
the progress registry through a real engine run, `sync-user` on a pseudo-terminal and with
stderr piped, and the worker's live view rendered while a real worker thread is mid-bodies.
"""

from __future__ import annotations

import io
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from killcli.cli.context import AppContext
from killcli.cli.ops import _LiveView
from killcli.config import Settings, load_settings
from killcli.console import SafeConsole
from killcli.db import Database
from killcli.esi.buckets import BucketKey
from killcli.esi.ratelimit import WaitEvent
from killcli.queue import open_broker
from killcli.runtime import Runtime, build_runtime
from killcli.scheduler import run_queue
from killcli.service import WorkerOptions, run_worker
from killcli.sync import SyncOptions
from killcli.sync.progress import ProgressRegistry, ProgressSnapshot, SyncTracker
from killsim import SimServer
from killsim.scenario import ESI_BUCKETS
from tests.conftest import sim_environ
from tests.test_terminal_safety import assert_terminal_safe, run_on_pty, run_piped

BUCKET = (20, 6)  # 10 bodies per 6 s: every wait is longer than the notice threshold
WAIT_LINE = re.compile(r"waiting (\d+) s for ESI killmail budget")
KILLMAIL_BUDGET = BucketKey("killmail")


@dataclass
class World:
    sim: SimServer
    settings: Settings
    db: Database
    env: dict[str, str]

    @property
    def busiest(self) -> int:
        """The character with the most killmails (several bucket windows of bodies)."""
        truth = self.sim.world.ground_truth()
        return max(truth, key=lambda cid: len(truth[cid]))

    def bodies_of(self, character_id: int) -> int:
        return len(self.sim.world.ground_truth()[character_id])

    def runtime(
        self, registry: ProgressRegistry, on_wait: Callable[[WaitEvent], None] | None = None
    ) -> Runtime:
        runtime = build_runtime(self.settings, self.db, on_wait=on_wait or registry.waiting)
        registry.attach(runtime.esi.limiter)
        return runtime


@pytest.fixture
def world(start_sim: Callable[..., SimServer], tmp_path: Path) -> Iterator[World]:
    """A smoke world whose killmail bucket holds far fewer bodies than a character has."""
    sim = start_sim("smoke", killmails=40, buckets={**ESI_BUCKETS, "killmail": BUCKET})
    env = sim_environ(sim, tmp_path / "home", f"sqlite:///{tmp_path / 'k.db'}")
    env["KILLSYNC_BROKER_URL"] = "database"
    settings = load_settings(environ=env)
    db = Database(env["KILLSYNC_DATABASE_URL"], create=True)
    db.upgrade()
    yield World(
        sim,
        settings,
        db,
        {**{k: v for k, v in os.environ.items() if not k.startswith("KILLSYNC_")}, **env},
    )
    db.close()


def add_character(world: World, runtime: Runtime, character_id: int) -> None:
    runtime.accounts.add_refresh_token(world.sim.issue_refresh_token(character_id))


class Observed:
    """Forwards the engine's hooks to a real tracker and keeps the registry's view after
    each one (what a renderer polling at that instant would draw)."""

    def __init__(self, tracker: SyncTracker, registry: ProgressRegistry) -> None:
        self.tracker, self.registry = tracker, registry
        self.seen: list[tuple[str, ProgressSnapshot]] = []

    def _after(self, hook: str) -> None:
        self.seen.append((hook, self.registry.snapshot()))

    def started(self, character_name: str) -> None:
        self.tracker.started(character_name)
        self._after("started")

    def pages(self, read: int, total: int) -> None:
        self.tracker.pages(read, total)
        self._after("pages")

    def bodies(self, done: int, total: int) -> None:
        self.tracker.bodies(done, total)
        self._after("bodies")

    def saving(self, killmails: int) -> None:
        self.tracker.saving(killmails)
        self._after("saving")


# -- the registry through a real engine run ----------------------------------------------


def test_phases_and_counts_of_a_real_sync(world: World) -> None:
    registry = ProgressRegistry()
    waits: list[ProgressSnapshot] = []

    def on_wait(event: WaitEvent) -> None:  # what a renderer would draw during the wait
        registry.waiting(event)
        # A pacing wait of a millisecond may be over (and pruned) before the snapshot is
        # taken: only waits long enough to be still in force are what a renderer shows.
        if event.wait_s >= 0.1:
            waits.append(registry.snapshot())

    runtime = world.runtime(registry, on_wait)
    cid = world.busiest
    add_character(world, runtime, cid)
    try:
        with registry.track(cid) as tracker:
            observed = Observed(tracker, registry)
            result = runtime.engine.sync_character(cid, SyncOptions(batch_size=10), observed)
    finally:
        runtime.close()
    total = world.bodies_of(cid)
    states = [snap.syncs[0] for _, snap in observed.seen]
    assert all(len(snap.syncs) == 1 for _, snap in observed.seen)
    assert states[0].character_name == result.character_name
    phases = [s.phase for i, s in enumerate(states) if i == 0 or states[i - 1].phase != s.phase]
    assert phases[:2] == ["list", "bodies"]
    assert phases[-1] == "saving" and "saving" in phases[2:-1]  # a batch every 10 bodies
    assert [s.bodies_done for s in states if s.phase == "bodies"] == list(range(total + 1))
    assert {s.bodies_total for s in states if s.phase != "list"} == {total}
    assert tracker.state.pages_read == result.figures.pages
    assert tracker.state.phase == "done" and registry.snapshot().syncs == ()
    # While the bucket was empty, the registry said so, with an ETA beyond the wait.
    blocked = [
        (snap, snap.syncs[0])
        for snap in waits
        if snap.syncs and snap.syncs[0].phase == "bodies" and 0 < snap.syncs[0].bodies_done < total
    ]
    assert blocked
    snap, state = blocked[-1]
    wait = snap.wait_for(state)
    assert wait is not None and WAIT_LINE.fullmatch(wait.message(snap.now_s))
    assert wait.refill_per_s is not None
    assert wait.refill_per_s == pytest.approx(BUCKET[0] / BUCKET[1] / 2)
    left = total - state.bodies_done  # the wait, then the rest at the bucket's pace
    assert snap.eta_s(state) == pytest.approx(
        wait.remaining_s(snap.now_s) + left / wait.refill_per_s
    )


def test_one_notice_per_wait_however_many_threads_wait() -> None:
    now = [100.0]
    notices: list[WaitEvent] = []
    registry = ProgressRegistry(clock=lambda: now[0], on_notice=notices.append)
    for thread in range(16):  # every body thread hits the same empty bucket
        registry.waiting(WaitEvent("bucket", 48.0 - thread * 0.01, KILLMAIL_BUDGET))
    registry.waiting(WaitEvent("bucket", 0.2, KILLMAIL_BUDGET))  # pacing: no line
    assert [e.message for e in notices] == ["waiting 48 s for ESI killmail budget"]
    snapshot = registry.snapshot()
    assert len(snapshot.waits) == 1 and snapshot.waits[0].until_s == 148.0
    now[0] = 148.5  # the next window: a new wait, a new line
    registry.waiting(WaitEvent("bucket", 30.0, KILLMAIL_BUDGET))
    assert len(notices) == 2
    now[0] = 200.0
    assert registry.snapshot().waits == ()


def test_waits_nobody_reads_do_not_pile_up() -> None:
    now = [0.0]
    registry = ProgressRegistry(clock=lambda: now[0])
    for cid in range(5_000):  # a worker's list walks, each waiting on its own bucket
        now[0] += 1.0
        registry.waiting(WaitEvent("bucket", 0.5, BucketKey("char-killmail", cid)))
    assert len(registry._waits) <= 300  # the memory bound itself: no public view shows it


# -- sync-user as a person sees it ---------------------------------------------------------


def _add_by_cli(world: World, cid: int) -> None:
    added = run_on_pty(
        world.env, "users", "add", "--refresh-token", "-", stdin=world.sim.issue_refresh_token(cid)
    )
    assert added.code == 0, added.text


def test_sync_user_on_a_terminal_counts_killmails_and_says_what_it_waits_for(world: World) -> None:
    cid = world.busiest
    _add_by_cli(world, cid)
    run = run_on_pty(world.env, "sync-user", str(cid))
    assert run.code == 0, run.text
    assert_terminal_safe(run)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", run.text)
    assert re.search(r"\d+(\.\d)? killmails/s", plain)
    assert "bytes/s" not in plain
    assert WAIT_LINE.search(plain), plain[-3000:]
    total = world.bodies_of(cid)
    assert f"{total}/{total}" in plain  # the bar's last frame
    assert re.search(rf"bodies fetched\s+│\s+{total}\s", plain)


def test_sync_user_piped_prints_each_wait_once(world: World) -> None:
    cid = world.busiest
    _add_by_cli(world, cid)
    done = run_piped(world.env, "sync-user", str(cid))
    assert done.returncode == 0, done.stderr
    waits = [line for line in done.stderr.splitlines() if WAIT_LINE.search(line)]
    total = world.bodies_of(cid)
    # One line per bucket window we ran dry in, not one per waiting request (16 threads).
    assert 1 <= len(waits) <= math.ceil(2 * total / BUCKET[0]), done.stderr
    assert "killmails/s" not in done.stderr  # no bars
    assert re.search(rf"bodies fetched\s+│\s+{total}\s", done.stdout)


# -- the worker's live view ------------------------------------------------------------------


def test_live_view_shows_a_running_sync_mid_bodies(world: World) -> None:
    buffer = io.StringIO()
    console = SafeConsole(file=buffer, width=200, markup=False, emoji=False, highlight=False)
    view = _LiveView(AppContext(world.settings, console))
    runtime = world.runtime(view.registry)
    cid = world.busiest
    add_character(world, runtime, cid)
    broker = open_broker(world.settings, world.db)
    run_queue(world.db, broker, character_ids=[cid])
    thread = threading.Thread(
        target=run_worker,
        args=(world.settings, world.db, broker, WorkerOptions(concurrency=1, drain=True)),
        kwargs={
            "stop": threading.Event(),
            "runtime": runtime,
            "progress": view.registry,
            "on_report": view.report,
        },
    )
    thread.start()
    try:
        state = _wait_for_mid_bodies(view.registry, cid)
        rendered = _render(view, buffer)
        assert list(view.reports) == []  # the job is still running
    finally:
        thread.join(timeout=120)
        runtime.close()
        broker.close()
    total = world.bodies_of(cid)
    name = re.escape(state.character_name)
    assert re.search(
        rf"{name} \({cid}\)\s*│\s*bodies\s*│\s*\d+/\d+\s*│\s*\d+/{total}\s", rendered
    ), rendered
    assert WAIT_LINE.search(rendered), rendered
    assert [r.outcome for r in view.reports] == ["done"]


def _wait_for_mid_bodies(registry: ProgressRegistry, cid: int) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        snapshot = registry.snapshot()
        for state in snapshot.syncs:
            total = state.bodies_total or 0
            if (
                state.character_id == cid
                and state.phase == "bodies"
                and 0 < state.bodies_done < total
                and snapshot.wait_for(state)
            ):
                return state
        time.sleep(0.05)
    pytest.fail("the sync never showed up mid-bodies and waiting")


def _render(view: _LiveView, buffer: io.StringIO) -> str:
    view.app_ctx.console.print(view.renderable())
    return buffer.getvalue()
