"""Corporations: the corporation killmail list, roles, affiliation and their admin calls."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from killsim import (
    CORPORATION_SCOPES,
    ESI_BUCKETS,
    NOT_IN_CORPORATION,
    READ_CORP_KILLMAILS,
    READ_CORP_ROLES,
    READ_KILLMAILS,
    ROLE_ERRORS,
    ManualClock,
    Scenario,
    SimServer,
    SystemClock,
    World,
    min_rotating_sync_time_s,
)
from killsim.errors import ScenarioError
from killsim.scenario import RoleErrorMode
from tests.sim.sim_helpers import OpenApi, SimFactory, bearer

CORP_ROUTE = "/corporations/{corporation_id}/killmails/recent"
ROLES_ROUTE = "/characters/{character_id}/roles"
DIRECTOR_SCOPES = (READ_KILLMAILS, *CORPORATION_SCOPES)
#: A small world with corporations: 6 characters in 2 corporations, 2 directors each.
SMALL = Scenario(
    name="corp-small",
    characters=6,
    killmails=120,
    corporations=2,
    directors_per_corporation=(2, 1),
    untracked_members=5,
    untracked_kill_fraction=0.4,
    page_size=7,
)


def corp_url(sim: SimServer, corporation_id: int) -> str:
    return f"{sim.esi_url}/corporations/{corporation_id}/killmails/recent"


def roles_url(sim: SimServer, character_id: int) -> str:
    return f"{sim.esi_url}/characters/{character_id}/roles"


def director_token(sim: SimServer, character_id: int) -> str:
    return sim.access_token(character_id, scopes=DIRECTOR_SCOPES)


def walk(sim: SimServer, http: httpx.Client, corp_id: int, token: str) -> list[int]:
    """Every killmail id of the corporation's list, page by page (200s expected)."""
    ids: list[int] = []
    page, pages = 1, 1
    while page <= pages:
        answer = http.get(corp_url(sim, corp_id), params={"page": page}, headers=bearer(token))
        assert answer.status_code == 200, answer.text
        pages = int(answer.headers["X-Pages"])
        ids.extend(row["killmail_id"] for row in answer.json())
        page += 1
    return ids


# -- the world ---------------------------------------------------------------------------


def test_corporations_have_directors_members_and_untracked_kills() -> None:
    world = World(SMALL, SystemClock())
    corps = world.corporations()
    assert len(corps) == 2
    first, second = corps.values()
    assert len(first.director_ids) == 2 and len(second.director_ids) == 1
    assert len(first.tracked_member_ids) == len(second.tracked_member_ids) == 3
    assert len(first.untracked_member_ids) == len(second.untracked_member_ids) == 5
    assert set(first.director_ids) <= set(first.tracked_member_ids)
    assert set(world.character_ids) == {
        m for c in corps.values() for m in c.tracked_member_ids
    }  # round robin: every character is in one of them
    for info in corps.values():
        for member in info.member_ids:
            char = world.character(member)
            assert char is not None and char.corporation_id == info.corporation_id
        assert world.roles(info.director_ids[0]).director
        plain = set(info.tracked_member_ids) - set(info.director_ids)
        assert all(not world.roles(m).director for m in plain)
    truth = world.corporation_ground_truth()
    characters = {k for rows in world.ground_truth().values() for k in rows}
    corp_only = {k for ids in truth.values() for k in ids} - characters
    assert corp_only, "untracked members' kills are in no character's list"
    for corp_id, ids in truth.items():
        for killmail_id in ids:
            body = world.body(killmail_id)
            sides = [body["victim"], *(a for a in body["attackers"] if a["final_blow"])]
            record = world.record(killmail_id)
            assert record is not None and corp_id in record.corporations
            # the victim's corporation, or the credited player's
            assert corp_id in {s.get("corporation_id") for s in sides} or any(
                a.get("corporation_id") == corp_id for a in body["attackers"]
            )
    summary = world.summary()
    assert summary.corporations == 2
    assert summary.corporation_only_killmails == len(corp_only)
    assert summary.listed_killmails + summary.corporation_only_killmails == SMALL.killmails


def test_the_corporation_scenario_needs_more_than_one_directors_bucket() -> None:
    scenario = Scenario.named("corporation")
    assert scenario.page_size != 50 and scenario.corporations == 2
    world = World(scenario, SystemClock())
    corps = list(world.corporations().values())
    assert [len(c.director_ids) for c in corps] == [2, 1]
    big = corps[0]
    pages = -(-len(world.corporation_ground_truth()[big.corporation_id]) // scenario.page_size)
    limit, window = scenario.buckets["corp-killmail"]
    per_window = (limit - 1 + 2) // 2  # fresh pages one bucket admits in a window
    assert pages > per_window, "one director's bucket is not enough for a window"
    summary = world.summary()
    assert summary.max_pages_per_director == -(-pages // 2)
    two = min_rotating_sync_time_s(limit, window, pages, 2)
    one = min_rotating_sync_time_s(limit, window, pages, 1)
    assert summary.min_corporation_sync_time_s >= two and one > two
    assert 10 <= summary.min_sync_time_s <= 60  # tens of seconds


def _world_digest(name: str) -> str:
    world = World(Scenario.named(name), ManualClock(datetime(2026, 9, 1, 12, tzinfo=UTC)))
    digest = hashlib.sha256()
    for killmail_id, record in sorted(world.killmails.items()):
        digest.update(f"{killmail_id}:{record.killmail_hash}:{sorted(record.recipients)}".encode())
        digest.update(world.body_bytes(killmail_id) or b"")
    for char in world.characters:
        digest.update(repr(char).encode())
    return digest.hexdigest()[:24]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smoke", "e499557b3c2a0a4e899de6d6"),
        ("incremental", "edfc6a0ff2d934c8d8d02619"),
        ("ratelimit", "62b5bb0cc0c801fe0cd1274c"),
    ],
)
def test_worlds_are_what_they_were_before_corporations(name: str, expected: str) -> None:
    """Digests taken before corporations existed: ids, hashes, bodies, characters."""
    assert _world_digest(name) == expected


def test_worlds_without_corporations_are_unchanged() -> None:
    world = World(Scenario.named("smoke"), SystemClock())
    assert world.corporations() == {} and world.corporation_ground_truth() == {}
    summary = dataclasses.asdict(world.summary())
    assert summary["corporations"] == summary["corporation_killmails"] == 0
    assert summary["min_corporation_sync_time_s"] == 0.0
    assert all(not r.director for r in map(world.roles, world.character_ids))


def test_corporation_knobs_from_a_file_and_their_checks(tmp_path: Path) -> None:
    path = tmp_path / "corp.toml"
    path.write_text(
        'base = "smoke"\ncorporations = 2\ncorporation_members = [2, 1]\n'
        "directors_per_corporation = [1, 1]\nuntracked_members = 3\n"
        'untracked_kill_fraction = 0.2\nrole_error = "alternate"\n',
        encoding="utf-8",
    )
    scenario = Scenario.from_file(path)
    assert scenario.corporation_members == (2, 1) and scenario.role_error == "alternate"
    assert scenario.per_corporation("untracked_members") == (3, 3)
    world = World(scenario, SystemClock())
    inside = {m for c in world.corporations().values() for m in c.tracked_member_ids}
    assert inside == set(world.character_ids[:3])  # the rest stay outside them
    with pytest.raises(ScenarioError, match="untracked_kill_fraction"):
        Scenario(untracked_kill_fraction=0.1)
    with pytest.raises(ScenarioError, match="directors_per_corporation"):
        Scenario(corporations=2, directors_per_corporation=(3, 1))
    with pytest.raises(ScenarioError, match="one number per corporation"):
        Scenario(corporations=2, untracked_members=(1, 2, 3))
    with pytest.raises(ScenarioError, match="role_error"):
        replace(SMALL, role_error="loud")  # type: ignore[arg-type]


# -- the corporation list ----------------------------------------------------------------------


def test_a_director_reads_the_whole_list_paged_and_cached(
    make_sim: SimFactory, http: httpx.Client, openapi: OpenApi
) -> None:
    sim = make_sim(SMALL)
    corp_id, info = next(iter(sim.world.corporations().items()))
    token = director_token(sim, info.director_ids[0])
    first = http.get(corp_url(sim, corp_id), headers=bearer(token))
    assert first.status_code == 200, first.text
    openapi.validate("CorporationsCorporationIdKillmailsRecentGet", first.json())
    for header in ("ETag", "Expires", "Last-Modified", "X-Pages", "Cache-Control"):
        assert header in first.headers
    assert first.headers["X-Ratelimit-Group"] == "corp-killmail"
    assert first.headers["X-Ratelimit-Limit"] == "30/15m"
    assert len(first.json()) == SMALL.page_size
    assert int(first.headers["X-Pages"]) > 1
    assert walk(sim, http, corp_id, token) == sim.world.corporation_ground_truth()[corp_id]
    again = http.get(
        corp_url(sim, corp_id), headers={**bearer(token), "If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304 and again.content == b""
    assert again.headers["X-Ratelimit-Used"] == "1"
    # one cache per corporation: the other director sees the same version
    other = http.get(
        corp_url(sim, corp_id), headers=bearer(director_token(sim, info.director_ids[1]))
    )
    assert other.headers["ETag"] == first.headers["ETag"]
    assert other.headers["Last-Modified"] == first.headers["Last-Modified"]


@pytest.mark.parametrize(
    ("mode", "texts"),
    [
        ("old", [ROLE_ERRORS["old"]] * 3),
        ("new", [ROLE_ERRORS["new"]] * 3),
        ("alternate", [ROLE_ERRORS["old"], ROLE_ERRORS["new"], ROLE_ERRORS["old"]]),
    ],
)
def test_a_member_without_the_role_is_refused(
    make_sim: SimFactory,
    http: httpx.Client,
    openapi: OpenApi,
    mode: RoleErrorMode,
    texts: list[str],
) -> None:
    sim = make_sim(replace(SMALL, role_error=mode))
    corp_id, info = next(iter(sim.world.corporations().items()))
    plain = next(m for m in info.tracked_member_ids if m not in info.director_ids)
    token = director_token(sim, plain)
    answers = [http.get(corp_url(sim, corp_id), headers=bearer(token)) for _ in texts]
    assert [a.status_code for a in answers] == [403] * len(texts)
    assert [a.json()["error"] for a in answers] == texts
    openapi.validate("Error", answers[0].json())
    assert [a.headers["X-Ratelimit-Used"] for a in answers] == ["5"] * len(texts)
    spent = sim.stats.snapshot().tokens_spent["corp-killmail"]
    assert spent == {f"{sim.client_id}:{plain}": 5 * len(texts)}


def test_outsiders_npc_corporations_and_missing_scopes_are_refused(
    make_sim: SimFactory, http: httpx.Client
) -> None:
    sim = make_sim(SMALL)
    (corp_a, info_a), (corp_b, _) = sim.world.corporations().items()
    director = info_a.director_ids[0]
    token = director_token(sim, director)
    other = http.get(corp_url(sim, corp_b), headers=bearer(token))
    npc = http.get(corp_url(sim, 1000127), headers=bearer(token))
    unknown = http.get(corp_url(sim, 98_999_999), headers=bearer(token))
    for answer in (other, npc, unknown):
        assert answer.status_code == 403
        assert answer.json() == {"error": NOT_IN_CORPORATION}
    own_only = sim.access_token(director, scopes=[READ_KILLMAILS])
    scope = http.get(corp_url(sim, corp_a), headers=bearer(own_only))
    assert scope.status_code == 403 and READ_CORP_KILLMAILS in scope.json()["error"]
    assert http.get(corp_url(sim, corp_a)).status_code == 401
    snap = sim.stats.snapshot()
    assert snap.count(CORP_ROUTE, 403) == 4 and snap.count(CORP_ROUTE, 401) == 1


def test_each_director_has_a_bucket_of_its_own(make_sim: SimFactory, http: httpx.Client) -> None:
    sim = make_sim("corporation")
    corp_id, info = next(iter(sim.world.corporations().items()))
    first, second = (director_token(sim, d) for d in info.director_ids)
    statuses = [
        http.get(corp_url(sim, corp_id), params={"page": p}, headers=bearer(first)).status_code
        for p in range(1, 18)
    ]
    assert statuses == [200] * 15 + [429, 429]
    refused = http.get(corp_url(sim, corp_id), params={"page": 16}, headers=bearer(first))
    assert int(refused.headers["Retry-After"]) >= 1
    rest = http.get(corp_url(sim, corp_id), params={"page": 16}, headers=bearer(second))
    assert rest.status_code == 200
    spent = sim.stats.snapshot().tokens_spent["corp-killmail"]
    assert spent == {
        f"{sim.client_id}:{info.director_ids[0]}": 30,
        f"{sim.client_id}:{info.director_ids[1]}": 2,
    }
    # the character's own list has a bucket (group) of its own
    own = sim.access_token(info.director_ids[0])
    mine = http.get(
        f"{sim.esi_url}/characters/{info.director_ids[0]}/killmails/recent", headers=bearer(own)
    )
    assert mine.status_code == 200 and mine.headers["X-Ratelimit-Group"] == "char-killmail"


def test_role_changes_moves_and_new_kills_mid_run(
    make_sim: SimFactory, http: httpx.Client, clock: ManualClock
) -> None:
    roomy = {**ESI_BUCKETS, "corp-killmail": (300, 900)}  # several walks by one director
    sim = make_sim(replace(SMALL, buckets=roomy), clock=clock)
    (corp_a, info_a), (corp_b, info_b) = sim.world.corporations().items()
    first, second = info_a.director_ids
    before = sim.world.corporation_ground_truth()[corp_a]
    assert walk(sim, http, corp_a, director_token(sim, first)) == before
    # Director taken away: refused at once, the other director still reads
    sim.world.set_roles(first, [])
    lost = http.get(corp_url(sim, corp_a), headers=bearer(director_token(sim, first)))
    assert lost.status_code == 403 and lost.json()["error"] == ROLE_ERRORS["old"]
    assert sim.world.corporations()[corp_a].director_ids == (second,)
    own = sim.access_token(first)
    assert http.get(f"{sim.esi_url}/characters/{first}/killmails/recent", headers=bearer(own))
    # the second director moves to the other corporation (and loses its roles there)
    sim.world.move_character(second, corp_b)
    moved = http.get(corp_url(sim, corp_a), headers=bearer(director_token(sim, second)))
    assert moved.status_code == 403 and moved.json()["error"] == NOT_IN_CORPORATION
    affiliation = http.post(f"{sim.esi_url}/characters/affiliation", json=[second]).json()
    assert affiliation[0]["corporation_id"] == corp_b
    assert second in sim.world.corporations()[corp_b].member_ids
    assert sim.world.corporations()[corp_a].director_ids == ()
    # its old killmails stay with the old corporation
    assert sim.world.corporation_ground_truth()[corp_a] == before
    # a new kill of an untracked member shows once the list cache refreshes
    sim.world.set_roles(first, ["Director"])
    new_id = sim.world.add_corporation_kill(corp_a)
    token = director_token(sim, first)
    assert new_id not in walk(sim, http, corp_a, token)
    assert all(new_id not in rows for rows in sim.world.ground_truth().values())
    sim.faults.refresh_corporation_list(corp_a)
    assert walk(sim, http, corp_a, token)[0] == new_id
    clock.advance(SMALL.list_cache_s)
    assert sim.world.corporation_ground_truth()[corp_a][0] == new_id
    with pytest.raises(KeyError):
        sim.world.add_corporation_kill(corp_a, member_id=first)
    with pytest.raises(ValueError, match="unknown role"):
        sim.world.set_roles(first, ["Emperor"])
    assert info_b.corporation_id == corp_b


def test_corporation_list_faults(make_sim: SimFactory, http: httpx.Client) -> None:
    sim = make_sim(SMALL)
    corp_id, info = next(iter(sim.world.corporations().items()))
    sim.faults.fail_corporation_list(corp_id, page=2, status=503)
    token = director_token(sim, info.director_ids[0])
    failed = http.get(corp_url(sim, corp_id), params={"page": 2}, headers=bearer(token))
    assert failed.status_code == 503
    assert http.get(corp_url(sim, corp_id), params={"page": 2}, headers=bearer(token)).is_success
    too_far = http.get(corp_url(sim, corp_id), params={"page": 999}, headers=bearer(token))
    assert too_far.status_code == 404


# -- roles, affiliation, names -----------------------------------------------------------


def test_roles_route(make_sim: SimFactory, http: httpx.Client, openapi: OpenApi) -> None:
    sim = make_sim(SMALL)
    info = next(iter(sim.world.corporations().values()))
    director = info.director_ids[0]
    token = sim.access_token(director, scopes=[READ_CORP_ROLES])
    answer = http.get(roles_url(sim, director), headers=bearer(token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    openapi.validate("CharactersCharacterIdRolesGet", body)
    openapi.assert_no_extra_keys("CharactersCharacterIdRolesGet", body)
    assert body == {
        "roles": ["Director"],
        "roles_at_base": [],
        "roles_at_hq": [],
        "roles_at_other": [],
    }
    assert answer.headers["Cache-Control"] == "private, max-age=3600"
    assert answer.headers["X-Ratelimit-Group"] == "char-detail"
    assert answer.headers["X-Ratelimit-Limit"] == "600/15m"
    for header in openapi.documented_headers(ROLES_ROUTE):
        assert header.lower() in answer.headers
    same = http.get(
        roles_url(sim, director), headers={**bearer(token), "If-None-Match": answer.headers["ETag"]}
    )
    assert same.status_code == 304
    sim.world.set_roles(director, ["Accountant"], at_hq=["Hangar_Take_1"])
    changed = http.get(roles_url(sim, director), headers=bearer(token)).json()
    assert changed["roles"] == ["Accountant"] and changed["roles_at_hq"] == ["Hangar_Take_1"]
    other = info.tracked_member_ids[-1]
    assert http.get(roles_url(sim, other), headers=bearer(token)).status_code == 403
    no_scope = sim.access_token(director)
    refused = http.get(roles_url(sim, director), headers=bearer(no_scope))
    assert refused.status_code == 403 and READ_CORP_ROLES in refused.json()["error"]


def test_affiliation_and_names_follow_corporations(
    make_sim: SimFactory, http: httpx.Client, openapi: OpenApi
) -> None:
    sim = make_sim(SMALL)
    (corp_a, info_a), (corp_b, _) = sim.world.corporations().items()
    ids = list(info_a.member_ids)
    answer = http.post(f"{sim.esi_url}/characters/affiliation", json=ids)
    assert answer.status_code == 200
    openapi.validate("CharactersAffiliationPost", answer.json())
    assert answer.headers["Cache-Control"] == "public, max-age=3600"
    assert {r["corporation_id"] for r in answer.json()} == {corp_a}
    assert all("alliance_id" in r for r in answer.json())  # the first corporation's alliance
    partly = http.post(f"{sim.esi_url}/characters/affiliation", json=[ids[0], 1, corp_a])
    assert [r["character_id"] for r in partly.json()] == [ids[0]]
    none = http.post(f"{sim.esi_url}/characters/affiliation", json=[1, 2])
    assert none.status_code == 404 and none.json() == {"error": "No characters found!"}
    too_many = http.post(f"{sim.esi_url}/characters/affiliation", json=list(range(1, 1002)))
    assert too_many.status_code == 400
    sim.world.move_character(ids[0], 1000127)  # leaves for an NPC corporation
    moved = http.post(f"{sim.esi_url}/characters/affiliation", json=[ids[0]]).json()
    assert (
        moved == [{"character_id": ids[0], "corporation_id": 1000127}]
        or moved[0]["corporation_id"] == 1000127
    )
    names = http.post(f"{sim.esi_url}/universe/names", json=[corp_a, corp_b]).json()
    assert {(n["id"], n["category"]) for n in names} == {
        (corp_a, "corporation"),
        (corp_b, "corporation"),
    }


def test_provisioning_gives_directors_the_corporation_scopes(make_sim: SimFactory) -> None:
    sim = make_sim(SMALL)
    directors = {d for c in sim.world.corporations().values() for d in c.director_ids}
    logins = sim.provision().characters
    for login in logins:
        expected = DIRECTOR_SCOPES if login.character_id in directors else (READ_KILLMAILS,)
        assert login.scopes == expected
    everyone = sim.provision(corporation_scopes_for=sim.world.character_ids).characters
    assert all(login.scopes == DIRECTOR_SCOPES for login in everyone)
    smoke = make_sim("smoke")
    assert all(login.scopes == (READ_KILLMAILS,) for login in smoke.provision().characters)
