"""The recent-killmails list: pages, caching, ETag/304, 90 days, who receives a kill, auth."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest

from killsim import READ_CORP_KILLMAILS, ManualClock, Scenario, SimServer
from tests.sim.sim_helpers import SimFactory, bearer, list_url

PAGE = 7


@pytest.fixture
def paged(make_sim: SimFactory, clock: ManualClock) -> SimServer:
    return make_sim(replace(Scenario.named("smoke"), page_size=PAGE), clock=clock)


def _walk(sim: SimServer, http: httpx.Client, character_id: int) -> list[httpx.Response]:
    token = bearer(sim.access_token(character_id))
    first = http.get(list_url(sim, character_id), headers=token)
    pages = [first]
    for page in range(2, int(first.headers["X-Pages"]) + 1):
        pages.append(http.get(list_url(sim, character_id), params={"page": page}, headers=token))
    assert all(p.status_code == 200 for p in pages)
    return pages


def test_pages_cover_the_list_newest_first(paged: SimServer, http: httpx.Client) -> None:
    char = paged.world.character_ids[0]
    truth = paged.world.ground_truth()[char]
    pages = _walk(paged, http, char)
    assert int(pages[0].headers["X-Pages"]) == -(-len(truth) // PAGE) > 1
    assert all(len(p.json()) == PAGE for p in pages[:-1])
    rows = [(r["killmail_id"], r["killmail_hash"]) for p in pages for r in p.json()]
    assert dict(rows) == truth
    times = [paged.world.killmails[k].killmail_time for k, _ in rows]
    assert times == sorted(times, reverse=True)
    assert len({p.headers["Last-Modified"] for p in pages}) == 1
    assert len({p.headers["ETag"] for p in pages}) == len(pages)
    assert all(p.headers["ETag"].startswith('"') and p.headers["ETag"].endswith('"') for p in pages)


def test_pages_outside_the_list_are_errors(paged: SimServer, http: httpx.Client) -> None:
    char = paged.world.character_ids[0]
    token = bearer(paged.access_token(char))
    pages = int(http.get(list_url(paged, char), headers=token).headers["X-Pages"])
    beyond = http.get(list_url(paged, char), params={"page": pages + 1}, headers=token)
    assert beyond.status_code == 404
    for bad in ("0", "-1", "two"):
        assert (
            http.get(list_url(paged, char), params={"page": bad}, headers=token).status_code == 400
        )


def test_latest_prefix_is_the_same_route(paged: SimServer, http: httpx.Client) -> None:
    char = paged.world.character_ids[0]
    token = bearer(paged.access_token(char))
    plain = http.get(list_url(paged, char), headers=token)
    latest = http.get(f"{paged.esi_url}/latest/characters/{char}/killmails/recent/", headers=token)
    assert latest.status_code == 200
    assert latest.json() == plain.json()


def test_if_none_match_gives_304_without_body(paged: SimServer, http: httpx.Client) -> None:
    char = paged.world.character_ids[0]
    token = bearer(paged.access_token(char))
    first = http.get(list_url(paged, char), headers=token)
    again = http.get(
        list_url(paged, char), headers={**token, "If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["X-Ratelimit-Used"] == "1"
    stale = http.get(list_url(paged, char), headers={**token, "If-None-Match": '"nope"'})
    assert stale.status_code == 200
    assert paged.stats.snapshot().not_modified == 1


def test_new_kills_appear_only_when_the_cache_refreshes(
    paged: SimServer, clock: ManualClock, http: httpx.Client
) -> None:
    char = paged.world.character_ids[0]
    token = bearer(paged.access_token(char, lifetime_s=10**6))
    first = http.get(list_url(paged, char), headers=token)
    expires = parsedate_to_datetime(first.headers["Expires"])
    assert expires - parsedate_to_datetime(first.headers["Last-Modified"]) == timedelta(seconds=300)
    clock.advance(10)
    new_id = paged.world.add_kill(victim=char)
    assert new_id > max(k for k in paged.world.killmails if k != new_id)
    assert new_id in paged.world.ground_truth()[char]
    conditional = {**token, "If-None-Match": first.headers["ETag"]}
    cached = http.get(list_url(paged, char), headers=conditional)
    assert cached.status_code == 304  # still the cached version
    clock.advance(290)
    fresh = http.get(list_url(paged, char), headers=conditional)
    assert fresh.status_code == 200
    assert fresh.json()[0]["killmail_id"] == new_id
    assert fresh.headers["ETag"] != first.headers["ETag"]
    assert parsedate_to_datetime(fresh.headers["Last-Modified"]) > parsedate_to_datetime(
        first.headers["Last-Modified"]
    )


def test_forced_refresh_between_pages_changes_last_modified(
    paged: SimServer, http: httpx.Client
) -> None:
    char = paged.world.character_ids[0]
    token = bearer(paged.access_token(char))
    page1 = http.get(list_url(paged, char), headers=token)
    paged.world.add_kill(attacker=char)
    paged.faults.refresh_list(char)
    page2 = http.get(list_url(paged, char), params={"page": 2}, headers=token)
    assert page2.headers["Last-Modified"] != page1.headers["Last-Modified"]
    # rows shifted by one: page 2 now starts with page 1's last row
    assert page2.json()[0] == page1.json()[-1]


def test_only_the_last_90_days_are_listed(
    paged: SimServer, clock: ManualClock, http: httpx.Client
) -> None:
    world = paged.world
    now = clock.now()
    old = {k for k, r in world.killmails.items() if now - r.killmail_time > timedelta(days=90)}
    assert len(old) == paged.scenario.old_killmails
    listed = {
        k
        for char in world.character_ids
        for p in _walk(paged, http, char)
        for k in (r["killmail_id"] for r in p.json())
    }
    assert listed and not listed & old
    assert listed == {k for rows in world.ground_truth().values() for k in rows}
    oldest = min(listed, key=lambda k: world.killmails[k].killmail_time)
    age = now - world.killmails[oldest].killmail_time
    clock.advance((timedelta(days=90) - age).total_seconds() + 301)  # past 90 days and cache
    later = {
        k
        for char in world.character_ids
        for p in _walk(paged, http, char)
        for k in (r["killmail_id"] for r in p.json())
    }
    assert oldest not in later


def test_lists_hold_only_kills_the_character_received(make_sim: SimFactory) -> None:
    world = make_sim("smoke").world
    received = world.ground_truth()
    for killmail_id, record in world.killmails.items():
        body = world.body(killmail_id)
        victim = body["victim"].get("character_id")
        final = next(a for a in body["attackers"] if a["final_blow"])
        expected = {victim} if victim in world.character_ids else set()
        if final.get("character_id") in world.character_ids:
            expected.add(final["character_id"])
        if "character_id" not in final:  # NPC final blow: a player attacker is credited
            players = {a["character_id"] for a in body["attackers"] if "character_id" in a}
            assert record.recipients - expected <= players
        else:
            assert record.recipients == expected
        for char, rows in received.items():
            if killmail_id in rows:
                assert char in record.recipients
    bystanders = [
        (k, a["character_id"])
        for k in world.killmails
        for a in world.body(k)["attackers"]
        if a.get("character_id") in world.character_ids
        and not a["final_blow"]
        and a["character_id"] not in world.killmails[k].recipients
    ]
    assert bystanders, "some simulated characters should be mere attackers"
    for killmail_id, char in bystanders:
        assert killmail_id not in received[char]


def test_npc_final_blow_credits_a_player(make_sim: SimFactory) -> None:
    world = make_sim("smoke").world
    char = world.character_ids[1]
    killmail_id = world.add_kill(attacker=char, npc_final_blow=True)
    body = world.body(killmail_id)
    final = next(a for a in body["attackers"] if a["final_blow"])
    assert "character_id" not in final
    assert any(a.get("character_id") == char for a in body["attackers"])
    assert killmail_id in world.ground_truth()[char]


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("missing", 401, "authorization not provided"),
        ("garbage", 401, "authentication failure"),
        ("expired", 403, "token is expired"),
        ("scope", 403, "token not valid for scope(s): esi-killmails.read_killmails.v1"),
        ("subject", 403, "token not valid for this character"),
    ],
)
def test_list_refuses_bad_tokens(
    paged: SimServer, clock: ManualClock, http: httpx.Client, case: str, status: int, message: str
) -> None:
    first, second = paged.world.character_ids[:2]
    tokens = {
        "missing": {},
        "garbage": bearer("not.a.jwt"),
        "expired": bearer(paged.access_token(first, lifetime_s=60)),
        "scope": bearer(paged.access_token(first, scopes=[READ_CORP_KILLMAILS])),
        "subject": bearer(paged.access_token(second)),
    }
    if case == "expired":
        clock.advance(61)
    response = http.get(list_url(paged, first), headers=tokens[case])
    assert (response.status_code, response.json()) == (status, {"error": message})
    if status == 403:  # an identified caller pays the 4xx price in its bucket
        assert response.headers["X-Ratelimit-Used"] == "5"
