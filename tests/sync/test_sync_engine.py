"""The sync engine against the simulator over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from killcli.config import load_settings
from killcli.db import Database
from killcli.db.models import Event, Name, PendingKillmail, SyncRun
from killcli.db.store import iter_killmail_bodies
from killcli.killmail import canonical_json
from killcli.runtime import build_runtime
from killcli.sync import SyncOptions
from killcli.sync.engine import SyncEngine
from killsim import SimServer
from tests.conftest import DbTarget, sim_environ

KILLMAIL_ROUTE = "/killmails/{killmail_id}/{killmail_hash}"
LIST_ROUTE = "/characters/{character_id}/killmails/recent"


def exported(
    db: Database, character_id: int | None = None, *, corporation_id: int | None = None
) -> dict[int, dict[str, Any]]:
    with db.session() as s:
        bodies = iter_killmail_bodies(s, character_id=character_id, corporation_id=corporation_id)
        return {b["killmail_id"]: b for b in bodies}


def assert_matches_ground_truth(sim: SimServer, db: Database, only: int | None = None) -> None:
    truth = sim.world.ground_truth()
    for cid, killmails in truth.items():
        if only is not None and cid != only:
            continue
        mine = exported(db, cid)
        assert set(mine) == set(killmails), cid
        for kid, body in mine.items():
            assert canonical_json(body) == canonical_json(sim.world.body(kid))


def test_every_killmail_once_equal_to_ground_truth(start_sim: Any, wire: Any, db: Database) -> None:
    sim = start_sim("smoke", page_size=7)  # not 50: the end is X-Pages, never a short page
    runtime = wire(sim)
    results = [runtime.engine.sync_character(cid) for cid in sim.world.ground_truth()]
    assert all(r.status == "ok" for r in results)
    assert_matches_ground_truth(sim, db)
    stats = sim.stats.snapshot()
    assert stats.body_fetches and max(stats.body_fetches.values()) == 1
    unique = set().union(*map(set, sim.world.ground_truth().values()))
    assert sum(r.figures.new for r in results) == len(unique)
    assert sum(r.figures.pages for r in results) == sum(
        -(-len(v) // 7) for v in sim.world.ground_truth().values()
    )
    with db.session() as s:
        events = s.scalars(select(Event)).all()
        assert len(events) == len(unique)
        assert {e.payload["killmail_id"] for e in events} == unique
        runs = s.scalars(select(SyncRun)).all()
        assert [r.status for r in runs] == ["ok"] * len(results)


def test_resync_costs_one_304_and_no_bodies_then_k_for_k_new(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim = start_sim("incremental", killmails=120)
    runtime = wire(sim)
    characters = sorted(sim.world.ground_truth(), key=lambda c: -len(sim.world.ground_truth()[c]))
    for cid in characters:
        runtime.engine.sync_character(cid)
    before = sim.stats.snapshot()
    time.sleep(sim.scenario.list_cache_s + 0.5)  # let each list's cache expire
    again = [runtime.engine.sync_character(cid) for cid in characters]
    after = sim.stats.snapshot()
    assert [r.status for r in again] == ["not_modified"] * len(characters)
    assert after.count(LIST_ROUTE, 304) - before.count(LIST_ROUTE, 304) == len(characters)
    assert after.count(LIST_ROUTE, 200) == before.count(LIST_ROUTE, 200)
    assert after.count(KILLMAIL_ROUTE, 200) == before.count(KILLMAIL_ROUTE, 200)

    victim = characters[0]
    new_ids = {sim.world.add_kill(victim=victim) for _ in range(3)}
    time.sleep(sim.scenario.list_cache_s + 0.5)
    result = runtime.engine.sync_character(victim)
    assert set(result.new_killmail_ids) == new_ids
    assert sim.stats.snapshot().count(KILLMAIL_ROUTE, 200) - after.count(KILLMAIL_ROUTE, 200) == 3
    # page 1 holds the 3 new kills and 7 known ones; page 2 only known ones: stop there
    assert len(sim.world.ground_truth()[victim]) > 20
    assert result.figures.pages == 2
    assert_matches_ground_truth(sim, db)


def test_list_cache_is_respected_unless_forced(start_sim: Any, wire: Any) -> None:
    sim = start_sim("smoke")
    runtime = wire(sim)
    cid = next(iter(sim.world.ground_truth()))
    runtime.engine.sync_character(cid)
    cached = runtime.engine.sync_character(cid)
    assert cached.status == "cached"
    assert cached.figures.pages == 0
    forced = runtime.engine.sync_character(cid, SyncOptions(force=True))
    assert forced.figures.pages == 1
    assert forced.figures.not_modified == 1


def test_list_refreshed_mid_walk_restarts(start_sim: Any, wire: Any, db: Database) -> None:
    sim = start_sim("smoke", page_size=5)
    runtime = wire(sim)
    cid = max(sim.world.ground_truth(), key=lambda c: len(sim.world.ground_truth()[c]))
    refreshed = threading.Event()

    class RefreshAfterFirstPage:
        def started(self, character_name: str) -> None:
            pass

        def saving(self, killmails: int) -> None:
            pass

        def pages(self, read: int, total: int) -> None:
            if read == 1 and not refreshed.is_set():
                refreshed.set()
                sim.world.add_kill(victim=cid)
                sim.faults.refresh_list(cid)

        def bodies(self, done: int, total: int) -> None:
            pass

    result = runtime.engine.sync_character(cid, progress=RefreshAfterFirstPage())
    assert refreshed.is_set()
    assert result.figures.list_restarts == 1
    assert set(exported(db, cid)) == set(sim.world.ground_truth()[cid])


def test_failed_bodies_become_pending_and_succeed_later(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim = start_sim("smoke")
    runtime = wire(sim)
    cid = next(iter(sim.world.ground_truth()))
    bad_hash, malformed = sorted(sim.world.ground_truth()[cid])[:2]
    sim.faults.fail_body(bad_hash, status=422, times=1)
    sim.faults.malformed_body(malformed, times=5)  # survives the client's retries
    first = runtime.engine.sync_character(cid)
    assert first.status == "partial"
    assert {int(r.split(":")[0]) for r in first.pending_reasons} == {bad_hash, malformed}
    with db.session() as s:
        pending = {p.killmail_id: p for p in s.scalars(select(PendingKillmail))}
        assert set(pending) == {bad_hash, malformed}
        for row in pending.values():  # due now, so the next run retries them
            row.next_attempt_at = row.first_seen_at
    second = runtime.engine.sync_character(cid)  # list answers from cache: pending still retried
    assert second.status == "cached"
    assert second.figures.pending_retried == 2
    assert set(second.new_killmail_ids) == {bad_hash, malformed}
    with db.session() as s:
        assert s.scalars(select(PendingKillmail)).all() == []
    assert_matches_ground_truth(sim, db, only=cid)


def test_a_body_pending_for_two_characters_is_linked_to_both_once_it_lands(
    start_sim: Any, wire: Any, db: Database
) -> None:
    """The pending row names one character; the other's list must be walked again, or
    its 304s would hide the killmail from it for good."""
    sim = start_sim("smoke", shared_fraction=0.9, killmails=80, list_cache_s=1)
    runtime = wire(sim)
    truth = sim.world.ground_truth()
    a, b, shared = next(
        (a, b, k)
        for a in truth
        for b in truth
        if a < b
        for k in sorted(set(truth[a]) & set(truth[b]))
    )
    sim.faults.fail_body(shared, status=422, times=2)  # the first try of each character
    assert runtime.engine.sync_character(a).status == "partial"
    assert runtime.engine.sync_character(b).status == "partial"
    with db.session() as s:
        row = s.get(PendingKillmail, shared)
        assert row is not None and row.character_id == a
        row.next_attempt_at = row.first_seen_at  # due now
    time.sleep(1.1)  # both lists' caches expired
    runtime.engine.sync_character(a)
    runtime.engine.sync_character(b)
    with db.session() as s:
        assert s.scalars(select(PendingKillmail)).all() == []
    assert shared in exported(db, a) and shared in exported(db, b)
    assert_matches_ground_truth(sim, db, only=a)
    assert_matches_ground_truth(sim, db, only=b)


def test_concurrent_syncs_sharing_killmails_fetch_each_body_once(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim = start_sim("smoke", shared_fraction=0.9, killmails=80)
    runtime = wire(sim)
    characters = list(sim.world.ground_truth())
    barrier = threading.Barrier(len(characters))
    errors: list[BaseException] = []

    def sync(cid: int) -> None:
        try:
            barrier.wait()
            runtime.engine.sync_character(cid)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=sync, args=(cid,)) for cid in characters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert max(sim.stats.snapshot().body_fetches.values()) == 1
    assert_matches_ground_truth(sim, db)


def test_names_with_an_unknown_id_are_split_and_cached(
    start_sim: Any, wire: Any, db: Database
) -> None:
    sim = start_sim("smoke", unknown_name_ids=1)
    runtime = wire(sim)
    for cid in sim.world.ground_truth():
        runtime.engine.sync_character(cid)
    with db.session() as s:
        unknown = s.scalars(select(Name).where(Name.retry_after.is_not(None))).all()
        known = s.scalars(select(Name).where(Name.name.is_not(None))).all()
    assert len(unknown) == 1
    assert len(known) > 50
    names_calls = sum(
        n for (route, _), n in sim.stats.snapshot().requests.items() if route == "/universe/names"
    )
    # one split chain for the bad id, not one call per id, and never an id asked twice
    assert names_calls < 40


def test_sync_user_prints_markup_names_verbatim(
    start_sim: Any, cli: Any, db_target: DbTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = start_sim("smoke")
    for key, value in sim_environ(sim, tmp_path / "home", db_target.url).items():
        monkeypatch.setenv(key, value)
    if db_target.kind == "postgresql":
        assert cli("db", "upgrade").exit_code == 0
    boss = next(c for c in sim.world.characters if c.name == "[b]Boss[/b]")
    assert (
        cli(
            "users", "add", "--refresh-token", "-", stdin=sim.issue_refresh_token(boss.character_id)
        ).exit_code
        == 0
    )
    result = cli("sync-user", str(boss.character_id), "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert f"[b]Boss[/b] ({boss.character_id}): ok" in result.stdout
    as_json = cli("sync-user", str(boss.character_id), "--json", "--force")
    data = json.loads(as_json.stdout)["data"]
    assert data["character_name"] == "[b]Boss[/b]"
    assert data["figures"]["not_modified"] == 1
    stats = json.loads(cli("stats", "--json").stdout)["data"]
    assert stats["killmails_total"] == len(sim.world.ground_truth()[boss.character_id])
    assert stats["characters_by_status"] == {"active": 1}
    assert stats["queue"]["ready"] == 0
    assert stats["characters"][0]["name"] == "[b]Boss[/b]"


def test_a_sync_caches_the_systems_and_victim_ships_of_what_it_saves(
    start_sim: Any, wire: Any, db: Database
) -> None:
    from killcli.universe import get_systems, get_types
    from killsim.market import region_of_constellation

    sim = start_sim("smoke")
    runtime = wire(sim)
    for cid in sim.world.ground_truth():
        runtime.engine.sync_character(cid)
    bodies = exported(db)
    systems = {b["solar_system_id"] for b in bodies.values()}
    ships = {b["victim"]["ship_type_id"] for b in bodies.values()}
    with db.session() as s:
        cached_systems = get_systems(s, systems)
        cached_ships = get_types(s, ships)
    assert set(cached_systems) == systems and set(cached_ships) == ships
    for system_id, info in cached_systems.items():
        truth = sim.world.system(system_id)
        assert truth is not None
        assert (info.security_status, info.region_id) == (
            truth.security_status,
            region_of_constellation(truth.constellation_id),
        )
    for type_id, ship in cached_ships.items():
        known = sim.world.item_type(type_id)
        assert known is not None and ship.group_id == known.group_id
    asked = sim.stats.snapshot().count("/universe/systems/{system_id}")
    assert asked == len(systems)  # each system asked for once
    runtime.engine.sync_character(next(iter(sim.world.ground_truth())), SyncOptions(full=True))
    assert sim.stats.snapshot().count("/universe/systems/{system_id}") == asked  # cached


def test_a_walk_cut_short_after_saving_its_newest_page_is_walked_whole_next_time(
    start_sim: Any, db: Database, db_target: DbTarget, tmp_path: Path, monkeypatch: Any
) -> None:
    """A sync that dies after saving page 1's bodies (newest first), before the pages
    below: the next walk must not stop at page 1 because every id on it is linked, or
    the killmails below it are lost for good (seen after a SIGKILL in bench_fleet)."""
    sim = start_sim("incremental", killmails=30, page_size=10)
    settings = load_settings(environ=sim_environ(sim, tmp_path / "home", db_target.url))
    runtime = build_runtime(settings, db, body_concurrency=1)  # bodies in the plan's order
    try:
        victim = max(sim.world.ground_truth(), key=lambda c: len(sim.world.ground_truth()[c]))
        for cid in sim.world.ground_truth():
            runtime.accounts.add_refresh_token(sim.issue_refresh_token(cid))
        assert runtime.engine.sync_character(victim).status == "ok"  # its ETag is stored
        new_ids = {sim.world.add_kill(victim=victim) for _ in range(25)}  # pages 1-3
        time.sleep(sim.scenario.list_cache_s + 0.5)

        real_save = SyncEngine._save_batch

        def save_then_die(self: SyncEngine, run: Any, batch: Any) -> None:
            real_save(self, run, batch)
            if batch:
                raise RuntimeError("the process died here")

        monkeypatch.setattr(SyncEngine, "_save_batch", save_then_die)
        with pytest.raises(RuntimeError, match="died"):
            runtime.engine.sync_character(victim, SyncOptions(batch_size=10))
        monkeypatch.setattr(SyncEngine, "_save_batch", real_save)
        saved = set(exported(db, victim)) & new_ids
        assert len(saved) == 10  # the newest page, and nothing below it

        again = runtime.engine.sync_character(victim)
        assert again.status == "ok"
        assert set(again.new_killmail_ids) == new_ids - saved
        assert_matches_ground_truth(sim, db, only=victim)
    finally:
        runtime.close()
