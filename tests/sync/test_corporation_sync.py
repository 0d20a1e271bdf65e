"""Corporation sync against the simulator over real HTTP, on SQLite and PostgreSQL.

Every tracked character logs in with the corporation scopes; the simulator decides who is
a Director of which corporation, and its ground truth says what each corporation's list
holds (kills of members who never log in among them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from killcli.accounts import CORPORATION_LOGIN_SCOPES
from killcli.config import load_settings
from killcli.corporations import list_corporations
from killcli.db import Database
from killcli.db.models import (
    Character,
    Corporation,
    CorporationStatus,
    DirectorStatus,
    Event,
    PendingKillmail,
    SyncRun,
)
from killcli.errors import NoDirector
from killcli.killmail import canonical_json
from killcli.runtime import Runtime, build_runtime
from killcli.scheduler import _pending_due
from killcli.sync import SyncOptions
from killcli.sync.corporation import CorporationSyncResult, sync_corporation
from killsim import SimServer
from killsim.scenario import ESI_BUCKETS
from tests.conftest import DbTarget, sim_environ
from tests.sync.test_sync_engine import KILLMAIL_ROUTE, exported

CORP_ROUTE = "/corporations/{corporation_id}/killmails/recent"
ROLES_ROUTE = "/characters/{character_id}/roles"
#: 6 characters in 2 corporations (A: 2 directors, B: 1), members who never log in.
SMALL: dict[str, Any] = {
    "characters": 6,
    "killmails": 120,
    "corporations": 2,
    "directors_per_corporation": (2, 1),
    "untracked_members": 5,
    "untracked_kill_fraction": 0.4,
    "page_size": 7,  # not 50: the end is X-Pages
}


@dataclass
class Corps:
    sim: SimServer
    runtime: Runtime
    db: Database
    a: int  # the corporation with two directors
    b: int  # the one with one

    def directors(self, corporation_id: int) -> list[int]:
        return sorted(self.sim.world.corporations()[corporation_id].director_ids)

    def sync(self, corporation_id: int, **options: Any) -> CorporationSyncResult:
        return sync_corporation(
            self.runtime.engine,
            self.runtime.corporations,
            corporation_id,
            SyncOptions(**options),
        )

    def count(self, route: str, status: int | None = None) -> int:
        return self.sim.stats.snapshot().count(route, status)

    def assert_stored_exactly(self, corporation_id: int) -> None:
        truth = set(self.sim.world.corporation_ground_truth()[corporation_id])
        mine = exported(self.db, corporation_id=corporation_id)
        assert set(mine) == truth
        for kid, body in mine.items():
            assert canonical_json(body) == canonical_json(self.sim.world.body(kid))


def make_corps(
    start_sim: Callable[..., Any], db: Database, db_target: DbTarget, home: Path, **overrides: Any
) -> Corps:
    """The SMALL scenario (with ``overrides``), every character logged in with the
    corporation scopes and checked; close ``.runtime`` afterwards."""
    sim: SimServer = start_sim("smoke", **(SMALL | overrides))
    settings = load_settings(environ=sim_environ(sim, home, db_target.url))
    runtime = build_runtime(settings, db)
    for cid in sim.world.ground_truth():
        runtime.accounts.add_refresh_token(
            sim.issue_refresh_token(cid, scopes=CORPORATION_LOGIN_SCOPES)
        )
    runtime.corporations.check_due()
    corporations = sim.world.corporations()
    a, b = sorted(corporations, key=lambda c: -len(corporations[c].director_ids))
    return Corps(sim, runtime, db, a, b)


@pytest.fixture
def corps(
    start_sim: Callable[..., Any], db: Database, db_target: DbTarget, tmp_path: Path
) -> Iterator[Corps]:
    made = make_corps(start_sim, db, db_target, tmp_path / "home")
    yield made
    made.runtime.close()


def test_every_corporation_killmail_stored_exactly_and_no_body_twice(
    corps: Corps, db: Database
) -> None:
    tracked = {c.corporation_id for c in list_corporations(corps.db)}
    assert tracked == {corps.a, corps.b}
    members = (
        set(corps.sim.world.ground_truth())
        - set(corps.directors(corps.a))
        - set(corps.directors(corps.b))
    )
    assert corps.count(ROLES_ROUTE, 200) == len(corps.sim.world.ground_truth())  # all checked
    for corporation_id in (corps.a, corps.b):
        result = corps.sync(corporation_id)
        assert result.status == "ok" and not result.directors_dropped
        assert set(result.directors_used) <= set(corps.directors(corporation_id))
        corps.assert_stored_exactly(corporation_id)
    for cid in corps.sim.world.ground_truth():  # the characters' own lists after
        assert corps.runtime.engine.sync_character(cid).status == "ok"
    assert corps.count(CORP_ROUTE, 403) == 0  # members' tokens never tried the route
    assert members
    unique = set().union(
        *map(set, corps.sim.world.ground_truth().values()),
        *map(set, corps.sim.world.corporation_ground_truth().values()),
    )
    assert corps.count(KILLMAIL_ROUTE, 200) == len(unique)  # no body fetched twice
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == len(unique)
        corp_events = s.scalars(select(Event.payload)).all()
        assert {p["corporation_id"] for p in corp_events} >= {corps.a, corps.b}
        runs = s.scalars(select(SyncRun).where(SyncRun.corporation_id == corps.a)).all()
        assert [r.status for r in runs] == ["ok"] and runs[0].character_id is None


class StoredAtEachPage:
    """Progress that notes, at each page read, how many of the corporation's killmails
    are stored already; ``after_save`` runs at the first page read after some were."""

    def __init__(
        self, corps: Corps, corporation_id: int, after_save: Callable[[], None] | None = None
    ) -> None:
        self.corps, self.corporation_id, self.after_save = corps, corporation_id, after_save
        self.stored: list[int] = []

    def started(self, character_name: str) -> None:
        pass

    def pages(self, read: int, total: int) -> None:
        self.stored.append(len(exported(self.corps.db, corporation_id=self.corporation_id)))
        if self.stored[-1] and self.after_save is not None:
            hook, self.after_save = self.after_save, None
            hook()

    def bodies(self, done: int, total: int) -> None:
        pass

    def saving(self, killmails: int) -> None:
        pass


#: Each director may read a few pages per 2 s: corporation A's list (two directors) needs
#: more.
TIGHT_CORP_BUCKET = {"buckets": {**ESI_BUCKETS, "corp-killmail": (6, 2)}}


@pytest.fixture
def tight_corps(
    start_sim: Callable[..., Any], db: Database, db_target: DbTarget, tmp_path: Path
) -> Iterator[Corps]:
    made = make_corps(start_sim, db, db_target, tmp_path / "home", **TIGHT_CORP_BUCKET)
    yield made
    made.runtime.close()


def test_a_list_longer_than_its_buckets_saves_what_it_read_while_it_waits(
    tight_corps: Corps,
) -> None:
    corps = tight_corps
    truth = corps.sim.world.corporation_ground_truth()[corps.a]
    pages = -(-len(truth) // SMALL["page_size"])
    assert pages > 6  # more than both directors' buckets hold in one window
    progress = StoredAtEachPage(corps, corps.a)
    result = sync_corporation(
        corps.runtime.engine, corps.runtime.corporations, corps.a, None, progress
    )
    assert result.status == "ok" and result.figures.pages == pages
    # The bodies of the pages read before the wait were stored before the next page ...
    first = next(i for i, n in enumerate(progress.stored) if n)
    assert 2 <= first < pages and 0 < progress.stored[first] <= first * SMALL["page_size"]
    assert progress.stored[-1] < len(truth)  # ... not at the end of the walk
    corps.assert_stored_exactly(corps.a)  # ... and every killmail in the end, each once
    assert max(corps.sim.stats.snapshot().body_fetches.values()) == 1
    f = result.figures
    assert (f.found, f.new, f.fetched, f.already) == (len(truth), len(truth), len(truth), 0)
    assert corps.sync(corps.a, force=True).status == "not_modified"


def test_a_list_refreshed_after_saving_while_waiting_restarts_and_misses_nothing(
    tight_corps: Corps,
) -> None:
    corps = tight_corps

    def new_kill_and_refresh() -> None:
        corps.sim.world.add_corporation_kill(corps.a)
        corps.sim.faults.refresh_corporation_list(corps.a)

    # The list changes under the walk after the wait (and the save).
    progress = StoredAtEachPage(corps, corps.a, after_save=new_kill_and_refresh)
    result = sync_corporation(
        corps.runtime.engine, corps.runtime.corporations, corps.a, None, progress
    )
    assert result.figures.list_restarts == 1
    assert result.status == "ok"
    corps.assert_stored_exactly(corps.a)  # the new kill, and every page below the saved ones
    assert max(corps.sim.stats.snapshot().body_fetches.values()) == 1


def test_a_resync_is_one_304(corps: Corps) -> None:
    first = corps.sync(corps.a)
    assert first.figures.pages > 1
    again = corps.sync(corps.a, force=True)
    assert again.status == "not_modified"
    assert (again.figures.pages, again.figures.not_modified, again.figures.fetched) == (1, 1, 0)
    assert again.figures.tokens == {"corp-killmail": 1}
    assert corps.sync(corps.a).status == "cached"  # within the list's cache: no request


def test_a_director_losing_the_role_mid_run(corps: Corps) -> None:
    first, second = corps.directors(corps.a)

    class TakeRoleAfterPageOne:
        def started(self, character_name: str) -> None:
            pass

        def pages(self, read: int, total: int) -> None:
            if read == 1:
                corps.sim.world.set_roles(first, [])

        def bodies(self, done: int, total: int) -> None:
            pass

        def saving(self, killmails: int) -> None:
            pass

    result = sync_corporation(
        corps.runtime.engine, corps.runtime.corporations, corps.a, None, TakeRoleAfterPageOne()
    )
    assert result.status == "ok"
    assert result.directors_used == (first, second) and result.directors_dropped == (first,)
    assert corps.count(CORP_ROUTE, 403) == 1  # one 403, then the other director
    corps.assert_stored_exactly(corps.a)
    states = {d.character_id: d for d in corps.runtime.corporations.check_due([first])}
    assert not states  # the new check's answer holds: not asked again
    assert corps.runtime.corporations.usable_directors(corps.a) == [second]
    own = corps.runtime.engine.sync_character(first)  # its own sync is unaffected
    assert own.status == "ok"
    assert set(exported(corps.db, first)) == set(corps.sim.world.ground_truth()[first])


def test_a_director_moving_to_another_corporation(corps: Corps) -> None:
    [boss] = corps.directors(corps.b)

    class MoveAfterPageOne:
        def started(self, character_name: str) -> None:
            pass

        def pages(self, read: int, total: int) -> None:
            if read == 1:
                corps.sim.world.move_character(boss, corps.a, roles=["Director"])

        def bodies(self, done: int, total: int) -> None:
            pass

        def saving(self, killmails: int) -> None:
            pass

    pages = corps.sim.world.corporation_ground_truth()[corps.b]
    assert len(pages) > 7  # more than one page
    with pytest.raises(NoDirector):
        sync_corporation(
            corps.runtime.engine, corps.runtime.corporations, corps.b, None, MoveAfterPageOne()
        )
    assert corps.count(CORP_ROUTE, 403) == 1
    listed = {c.corporation_id: c for c in list_corporations(corps.db)}
    assert listed[corps.b].status == CorporationStatus.NO_DIRECTOR
    assert listed[corps.b].last_error  # the failed run says why
    assert listed[corps.a].directors_usable == 3  # a Director of A now
    before = corps.count(CORP_ROUTE)
    with pytest.raises(NoDirector):  # no usable director: no request at all
        corps.sync(corps.b)
    assert corps.count(CORP_ROUTE) == before
    assert corps.sync(corps.a).status == "ok"
    corps.assert_stored_exactly(corps.a)


def test_an_npc_corporation_is_ignored(corps: Corps, db: Database) -> None:
    [boss] = corps.directors(corps.b)
    corps.sim.world.move_character(boss, 1000127, roles=["Director"])  # Guristas
    roles_before = corps.count(ROLES_ROUTE)
    [check] = corps.runtime.corporations.check_candidates([boss])
    assert check.status == DirectorStatus.NPC_CORPORATION and check.corporation_id == 1000127
    assert corps.count(ROLES_ROUTE) == roles_before  # no roles asked for
    with db.session() as s:
        assert s.get(Corporation, 1000127) is None
        b = s.get(Corporation, corps.b)
        assert b is not None and b.status == CorporationStatus.NO_DIRECTOR


def test_pending_bodies_of_a_corporation_are_its_own(corps: Corps, db: Database) -> None:
    victim = sorted(corps.sim.world.corporation_ground_truth()[corps.a])[0]
    corps.sim.faults.fail_body(victim, status=500, times=100)
    result = corps.sync(corps.a)
    assert result.status == "partial"
    with db.session() as s:
        row = s.get(PendingKillmail, victim)
        assert row is not None and (row.character_id, row.corporation_id) == (None, corps.a)
        later = row.next_attempt_at + timedelta(days=1)
        # ... and makes no character due for a pending retry
        assert s.scalars(select(Character.character_id).where(_pending_due(later))).all() == []


def test_the_corporation_sync_commands(
    corps: Corps,
    db_target: DbTarget,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in sim_environ(corps.sim, tmp_path / "home", db_target.url).items():
        monkeypatch.setenv(key, value)
    synced = cli("sync-corporation", str(corps.a), "--json", "--no-progress")
    assert synced.exit_code == 0, synced.stderr
    payload = json.loads(synced.stdout)
    assert payload["kind"] == "sync.corporation" and payload["data"]["status"] == "ok"
    table = cli("sync-corporation", str(corps.a), "--force", "--no-progress")
    assert table.exit_code == 0 and "directors used" in table.stdout
    out = tmp_path / "corp.jsonl"
    assert cli("export", "--corporation", str(corps.a), "--output", str(out)).exit_code == 0
    ids = {json.loads(line)["killmail_id"] for line in out.read_text().splitlines()}
    assert ids == set(corps.sim.world.corporation_ground_truth()[corps.a])
    assert cli("corporations", "disable", str(corps.b)).exit_code == 0
    refused = cli("sync-corporation", str(corps.b))
    assert refused.exit_code == 2 and "disabled" in refused.stderr
    stats = json.loads(cli("stats", "--json").stdout)["data"]
    assert stats["corporations_by_status"] == {"active": 1, "disabled": 1}
    assert cli("corporations", "enable", str(corps.b)).exit_code == 0
    [boss] = corps.directors(corps.b)
    corps.sim.world.set_roles(boss, [])
    corps.runtime.corporations.check(boss)
    gone = cli("sync-corporation", str(corps.b))
    assert gone.exit_code == 4 and "no director" in gone.stderr  # NEEDS_LOGIN
