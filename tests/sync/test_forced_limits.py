"""When ESI does answer 429 or 420 (another client on the same IP spent the budget), the
client waits as told and the sync still finishes with every killmail."""

from __future__ import annotations

import time
from typing import Any

import httpx

from killcli.db import Database
from killcli.db.store import iter_killmail_bodies
from killsim import SimServer

BODY = "/killmails/{killmail_id}/{killmail_hash}"


def stored(db: Database) -> set[int]:
    with db.session() as s:
        return {b["killmail_id"] for b in iter_killmail_bodies(s)}


def test_a_bucket_drained_by_someone_else_means_429_then_waiting(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim: SimServer = start_sim("ratelimit", characters=1, shared_fraction=0.0, killmails=12)
    runtime = wire(sim)
    cid = next(iter(sim.world.ground_truth()))
    other = sorted(sim.world.ground_truth()[cid].items())
    with httpx.Client(base_url=sim.esi_url) as rogue:  # another app on our IP, no manners
        while True:
            kid, khash = other[0]
            if rogue.get(f"/killmails/{kid}/{khash}").status_code == 429:
                break
    before = sim.stats.snapshot().count(BODY, 429)
    started = time.monotonic()
    result = runtime.engine.sync_character(cid)
    assert result.status == "ok"
    assert stored(db) == set(sim.world.ground_truth()[cid])
    assert sim.stats.snapshot().count(BODY, 429) - before <= 1  # one probe, then it waited
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured, not hammered


def test_an_exhausted_error_limit_means_420_then_a_pause(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim: SimServer = start_sim("ratelimit", characters=1, shared_fraction=0.0, killmails=6)
    runtime = wire(sim)
    cid = next(iter(sim.world.ground_truth()))
    kid = next(iter(sim.world.ground_truth()[cid]))
    with httpx.Client(base_url=sim.esi_url) as rogue:
        for _ in range(sim.scenario.error_limit + 1):  # wrong hashes: 422s, then 420s
            last = rogue.get(f"/killmails/{kid}/{'0' * 40}")
    assert last.status_code == 420
    reset_s = int(last.headers["X-ESI-Error-Limit-Reset"])
    started = time.monotonic()
    result = runtime.engine.sync_character(cid)
    assert result.status == "ok"
    assert stored(db) == set(sim.world.ground_truth()[cid])
    assert time.monotonic() - started >= reset_s - 1  # paused until the window reset
    assert sim.stats.snapshot().count(status=420) <= sim.scenario.error_limit + 2
