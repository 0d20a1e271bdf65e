"""Directors and tracked corporations: roles checks, statuses, the commands that show them.

Characters log in through the simulated SSO (real refresh, real scopes); the ESI side of
the roles checks (affiliation, roles, names, and the corporation route that must not be
called) is a small stateful ``httpx.MockTransport`` handler, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from killcli.accounts import CORPORATION_LOGIN_SCOPES, KILLMAIL_SCOPE, Accounts
from killcli.clock import ManualClock
from killcli.config import load_settings
from killcli.corporations import (
    NOT_IN_CORPORATION_RECHECK_S,
    Corporations,
    is_npc_corporation,
    list_corporations,
)
from killcli.db import Database
from killcli.db.models import (
    Character,
    CharacterStatus,
    Corporation,
    CorporationDirector,
    CorporationStatus,
    DirectorStatus,
)
from killcli.db.types import utcnow
from killcli.esi import EsiClient
from killcli.esi.retry import RetryPolicy
from killcli.runtime import make_accounts
from killsim import SimServer
from tests.conftest import CliResult, DbTarget, sim_environ

CORP_A, CORP_B, NPC_CORP = 98_000_001, 98_000_002, 1_000_125
Cli = Callable[..., CliResult]


class CorpEsi:
    """ESI's affiliation, roles and names routes over a mutable world; counts every call.
    ``fail`` makes every call answer 503 (ESI down)."""

    def __init__(self) -> None:
        self.corporation_of: dict[int, int] = {}
        self.roles_of: dict[int, list[str]] = {}
        self.calls: Counter[str] = Counter()
        self.fail = False
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        kind = path.rsplit("/", 1)[-1] if path.startswith("/characters/") else path
        with self._lock:
            self.calls[kind] += 1
        if self.fail:
            return httpx.Response(503, json={"error": "down"})
        if path == "/characters/affiliation":
            ids = json.loads(request.content)
            return httpx.Response(
                200,
                json=[
                    {"character_id": i, "corporation_id": self.corporation_of[i]}
                    for i in ids
                    if i in self.corporation_of
                ],
            )
        if path.endswith("/roles"):
            assert request.headers["authorization"].startswith("Bearer ")
            cid = int(path.split("/")[2])
            return httpx.Response(200, json={"roles": self.roles_of.get(cid, [])})
        if path == "/universe/names":
            ids = json.loads(request.content)
            return httpx.Response(
                200, json=[{"id": i, "name": f"Corp {i}", "category": "corporation"} for i in ids]
            )
        return httpx.Response(404, json={"error": "not found"})  # the corp list among others


@pytest.fixture
def sim(start_sim: Any) -> SimServer:
    return start_sim("smoke", characters=3, killmails=5)  # type: ignore[no-any-return]


@pytest.fixture
def accounts(
    db: Database, db_target: DbTarget, tmp_path: Path, sim: SimServer
) -> Iterator[Accounts]:
    made = make_accounts(load_settings(environ=sim_environ(sim, tmp_path / "h", db_target.url)), db)
    yield made
    made.sso.close()


@pytest.fixture
def esi() -> CorpEsi:
    return CorpEsi()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock.at(utcnow())


@pytest.fixture
def corporations(
    db: Database, accounts: Accounts, esi: CorpEsi, clock: ManualClock
) -> Iterator[Corporations]:
    client = EsiClient(
        "https://esi.test",
        user_agent="killsync-tests",
        transport=httpx.MockTransport(esi),
        retry_policy=RetryPolicy(max_attempts=1),
    )
    yield Corporations(db, client, accounts, clock=clock)
    client.close()


@dataclass
class World:
    """The simulated SSO's characters, the fake ESI and the service under test."""

    sim: SimServer
    accounts: Accounts
    corporations: Corporations
    esi: CorpEsi
    db: Database
    clock: ManualClock

    @property
    def ids(self) -> list[int]:
        return sorted(self.sim.world.ground_truth())

    def add(self, cid: int, *, corporation: bool = True, roles: Sequence[str] = ()) -> None:
        """Log ``cid`` in (with the corporation scopes unless told not to), in ``CORP_A``
        with ``roles`` on ESI's side."""
        scopes = CORPORATION_LOGIN_SCOPES if corporation else (KILLMAIL_SCOPE,)
        self.accounts.add_refresh_token(self.sim.issue_refresh_token(cid, scopes=scopes))
        self.esi.corporation_of.setdefault(cid, CORP_A)
        self.esi.roles_of[cid] = list(roles)

    def director(self, cid: int) -> CorporationDirector:
        with self.db.session() as session:
            row = session.get(CorporationDirector, cid)
            assert row is not None
            session.expunge(row)
            return row

    def corporation(self, corporation_id: int) -> Corporation | None:
        with self.db.session() as session:
            row = session.get(Corporation, corporation_id)
            if row is not None:
                session.expunge(row)
            return row

    def corporation_status(self, corporation_id: int) -> CorporationStatus | None:
        row = self.corporation(corporation_id)
        return None if row is None else row.status


@pytest.fixture
def world(
    sim: SimServer,
    accounts: Accounts,
    corporations: Corporations,
    esi: CorpEsi,
    db: Database,
    clock: ManualClock,
) -> World:
    return World(sim, accounts, corporations, esi, db, clock)


def test_a_director_makes_its_corporation_tracked(world: World) -> None:
    cid = world.ids[0]
    world.add(cid, roles=["Director", "Accountant"])
    assert world.director(cid).status == DirectorStatus.UNCHECKED
    [result] = world.corporations.check_candidates([cid])
    assert (result.status, result.corporation_id, result.tracked) == (
        DirectorStatus.USABLE,
        CORP_A,
        True,
    )
    tracked = world.corporation(CORP_A)
    assert tracked is not None and tracked.name == f"Corp {CORP_A}" and tracked.enabled
    assert tracked.status == CorporationStatus.ACTIVE
    [info] = list_corporations(world.db)
    assert (info.directors_usable, info.directors_total, info.killmails) == (1, 1, 0)
    assert world.corporations.usable_directors(CORP_A) == [cid]


def test_a_member_without_the_role_is_checked_and_never_tracked(world: World) -> None:
    cid = world.ids[0]
    world.add(cid, roles=["Accountant"])
    [result] = world.corporations.check_candidates([cid])
    assert result.status == DirectorStatus.NO_ROLE and not result.tracked
    assert world.esi.calls["roles"] == 1
    assert world.corporation(CORP_A) is None
    assert list_corporations(world.db) == []
    assert not any("/corporations/" in path for path in world.esi.calls)


def test_an_npc_corporation_is_never_tracked_nor_asked_for_roles(world: World) -> None:
    assert is_npc_corporation(NPC_CORP) and not is_npc_corporation(CORP_A)
    cid = world.ids[0]
    world.esi.corporation_of[cid] = NPC_CORP
    world.add(cid, roles=["Director"])
    [result] = world.corporations.check_candidates([cid])
    assert result.status == DirectorStatus.NPC_CORPORATION
    assert world.esi.calls["roles"] == 0
    assert world.corporation(NPC_CORP) is None


def test_a_token_without_the_scopes_is_no_director_and_losing_them_is_no_scope(
    world: World,
) -> None:
    plain, boss = world.ids[:2]
    world.add(plain, corporation=False)
    world.add(boss, roles=["Director"])
    assert [r.character_id for r in world.corporations.check_candidates([plain, boss])] == [boss]
    world.add(boss, corporation=False, roles=["Director"])  # a new token without them
    lost = world.director(boss)
    assert lost.status == DirectorStatus.NO_SCOPE
    assert "esi-killmails.read_corporation_killmails.v1" in (lost.status_reason or "")
    assert world.corporation_status(CORP_A) == CorporationStatus.NO_DIRECTOR
    assert world.corporations.usable_directors(CORP_A) == []
    world.add(boss, roles=["Director"])  # logged in again with them: checked again at once
    assert world.director(boss).status == DirectorStatus.UNCHECKED
    assert world.corporations.usable_directors(CORP_A) == [boss]


def test_roles_are_rechecked_when_their_cache_expires(world: World) -> None:
    cid = world.ids[0]
    world.add(cid, roles=["Director"])
    world.corporations.check_candidates([cid])
    world.esi.roles_of[cid] = []  # the role is taken away in game
    assert world.corporations.check_due() == []  # ESI's answer still holds: nothing asked
    assert world.esi.calls["roles"] == 1
    world.clock.sleep(3601)
    [result] = world.corporations.check_due()
    assert result.status == DirectorStatus.NO_ROLE
    assert world.corporation_status(CORP_A) == CorporationStatus.NO_DIRECTOR
    with world.db.session() as session:  # the character's own sync is untouched
        character = session.get(Character, cid)
        assert character is not None and character.status == CharacterStatus.ACTIVE


def test_a_director_moving_to_another_corporation(world: World) -> None:
    cid = world.ids[0]
    world.add(cid, roles=["Director"])
    world.corporations.check_candidates([cid])
    world.esi.corporation_of[cid] = CORP_B  # founded a new corporation: Director there too
    world.clock.sleep(3601)
    [result] = world.corporations.check_due()
    assert (result.corporation_id, result.status, result.tracked) == (
        CORP_B,
        DirectorStatus.USABLE,
        True,
    )
    assert world.corporation_status(CORP_A) == CorporationStatus.NO_DIRECTOR
    assert world.corporation_status(CORP_B) == CorporationStatus.ACTIVE
    assert world.corporations.usable_directors(CORP_A) == []
    assert world.corporations.usable_directors(CORP_B) == [cid]


def test_a_403_is_decided_by_a_new_check_not_by_its_text(world: World) -> None:
    first, second = world.ids[:2]
    for cid in (first, second):
        world.add(cid, roles=["Director"])
    world.corporations.check_candidates([first, second])
    world.esi.roles_of[first] = []  # the new check sees the role gone, whatever the text says
    text = "Character is not in the corporation"
    assert world.corporations.record_forbidden(first, CORP_A, text).status == (
        DirectorStatus.NO_ROLE
    )
    # Roles still list Director (ESI's cache): the 403 is believed, for a day.
    assert world.corporations.record_forbidden(second, CORP_A, text).status == (
        DirectorStatus.NOT_IN_CORPORATION
    )
    expires = world.director(second).roles_expires_at
    assert expires is not None
    assert expires - world.clock.now() == timedelta(seconds=NOT_IN_CORPORATION_RECHECK_S)
    assert world.corporation_status(CORP_A) == CorporationStatus.NO_DIRECTOR


def test_directors_are_used_least_recently_first(world: World) -> None:
    ids = world.ids
    for cid in ids:
        world.add(cid, roles=["Director"])
    world.corporations.check_candidates(ids)
    assert world.corporations.usable_directors(CORP_A) == ids
    world.corporations.mark_used(ids[0])
    world.clock.sleep(1)
    world.corporations.mark_used(ids[2])
    assert world.corporations.usable_directors(CORP_A) == [ids[1], ids[0], ids[2]]


def test_a_check_esi_cannot_answer_keeps_the_state_and_says_why(world: World) -> None:
    cid = world.ids[0]
    world.add(cid, roles=["Director"])
    world.corporations.check_candidates([cid])
    world.esi.fail = True
    world.clock.sleep(3601)
    [result] = world.corporations.check_due()
    assert result.status == DirectorStatus.USABLE and "affiliation" in (result.reason or "")
    row = world.director(cid)
    assert row.status == DirectorStatus.USABLE and "503" in (row.last_error or "")
    assert world.corporations.check_due() == []  # retried in 5 minutes, not at every call
    world.clock.sleep(301)
    world.esi.fail = False
    [again] = world.corporations.check_due()
    assert again.status == DirectorStatus.USABLE and again.reason is None
    assert world.director(cid).last_error is None


def test_the_corporation_commands(
    world: World, db_target: DbTarget, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    boss, member = world.ids[:2]
    world.add(boss, roles=["Director"])
    world.add(member, roles=["Accountant"])
    world.corporations.check_candidates([boss, member])
    with world.db.session() as session:  # a name from outside reaches the terminal sanitised
        session.execute(update(Corporation).values(name="Evil\x1b[2J Corp"))
    for key, value in sim_environ(world.sim, tmp_path / "home", db_target.url).items():
        monkeypatch.setenv(key, value)
    listed = cli("corporations", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    [row] = json.loads(listed.stdout)["data"]
    assert (row["corporation_id"], row["directors_usable"], row["directors_total"]) == (
        CORP_A,
        1,
        2,
    )
    table = cli("corporations", "list")
    assert "1/2" in table.stdout and "\x1b" not in table.stdout
    assert cli("corporations", "disable", str(CORP_A)).exit_code == 0
    assert json.loads(cli("corporations", "list", "--json").stdout)["data"][0]["enabled"] is False
    assert "disabled" in cli("corporations", "list").stdout
    assert cli("corporations", "enable", str(CORP_A)).exit_code == 0
    missing = cli("corporations", "disable", "98000999")
    assert missing.exit_code != 0 and "not tracked" in missing.stderr
    users = json.loads(cli("users", "list", "--json").stdout)["data"]
    by_id = {u["character_id"]: u["corporation"] for u in users}
    assert by_id[boss]["status"] == "usable" and by_id[boss]["corporation_id"] == CORP_A
    assert by_id[member]["status"] == "no_role"
    assert f"{CORP_A} usable" in cli("users", "list").stdout
    with world.db.session() as session:
        assert session.scalar(select(Corporation.enabled)) is True
