"""Names of killmail ids: concurrent syncs share one lookup, nothing is asked for twice."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select

from killcli.db import Database
from killcli.db.models import Name
from killcli.runtime import Runtime
from killsim import FaultPlan, SimServer, ids_in_body

NAMES = "/universe/names"


def test_concurrent_syncs_share_one_lookup_and_each_gets_its_names(
    start_sim: Any, wire: Callable[[SimServer], Runtime], db: Database
) -> None:
    sim = start_sim("smoke", faults=FaultPlan(latency_ms=60))
    runtime = wire(sim)
    every = set().union(*(ids_in_body(sim.world.body(k)) for k in sim.world.killmails))
    ids = sorted(every - set(sim.world.unknown_ids))[:48]
    # 16 syncs at once, each with ids of its own and one they all share.
    wanted = [frozenset({ids[0], ids[1 + 2 * i], ids[2 + 2 * i]}) for i in range(16)]
    before = sim.stats.snapshot().count(NAMES)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(runtime.engine.names.resolve, wanted))
    asked = sim.stats.snapshot().count(NAMES) - before
    for want, (names, _resolved) in zip(wanted, results, strict=True):
        assert set(names) == want
        assert all(names[i] == sim.world.name(i)[0] for i in want)
    # One lookup for the first caller, one for everyone who queued behind it (a lock held
    # across each round trip made that 16 lookups, one after another).
    assert asked <= 3
    assert sum(resolved for _, resolved in results) >= len(set().union(*wanted))
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Name)) == len(set().union(*wanted))
    again_before = sim.stats.snapshot().count(NAMES)
    names, resolved = runtime.engine.names.resolve(wanted[0])
    assert resolved == 0 and set(names) == wanted[0]  # from the cache
    assert sim.stats.snapshot().count(NAMES) == again_before
