"""The generated world: body bytes as ESI writes them, odd shapes, names, determinism."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from killsim import ManualClock, Scenario, SimServer, SystemClock, World, ids_in_body
from tests.sim.sim_helpers import SimFactory, body_url


@pytest.fixture(scope="module")
def chaos_world() -> World:
    return World(Scenario.named("chaos", seed=5), SystemClock())


def _walk(obj: Any) -> list[Any]:
    out = [obj]
    if isinstance(obj, dict):
        for value in obj.values():
            out.extend(_walk(value))
    elif isinstance(obj, list):
        for value in obj:
            out.extend(_walk(value))
    return out


def test_body_route_answers_exact_bytes(sim: SimServer, http: httpx.Client) -> None:
    killmail_id = next(iter(sim.world.killmails))
    response = http.get(body_url(sim, killmail_id))
    assert response.status_code == 200
    assert response.content == sim.world.body_bytes(killmail_id)
    assert response.json() == sim.world.body(killmail_id)
    assert response.headers["ETag"].startswith('"')
    again = http.get(
        body_url(sim, killmail_id), headers={"If-None-Match": response.headers["ETag"]}
    )
    assert (again.status_code, again.content) == (304, b"")
    wrong = http.get(body_url(sim, killmail_id, "0" * 40))
    assert wrong.json() == {"error": "Invalid killmail_id and/or killmail_hash"}
    assert wrong.status_code == 422
    assert http.get(body_url(sim, 99, "0" * 40)).status_code == 404
    assert sim.stats.snapshot().body_fetches[killmail_id] == 3


def test_bytes_look_like_esi(chaos_world: World) -> None:
    raw = b"".join(chaos_world.body_bytes(k) or b"" for k in chaos_world.killmails)
    assert b": " not in raw and b", " not in raw  # compact
    assert b".0," not in raw and b".0}" not in raw  # integral floats as integers
    assert b"<" not in raw and b">" not in raw  # Go escapes them
    for killmail_id in list(chaos_world.killmails)[:50]:
        for obj in _walk(chaos_world.body(killmail_id)):
            if isinstance(obj, dict):
                assert list(obj) == sorted(obj), "keys are in alphabetical order"


def test_world_has_every_odd_shape(chaos_world: World) -> None:
    bodies = [chaos_world.body(k) for k in chaos_world.killmails]
    attackers = [a for b in bodies for a in b["attackers"]]
    items = [i for b in bodies for i in b["victim"].get("items", [])]
    assert any(
        set(a) >= {"faction_id"} and "character_id" not in a and "corporation_id" not in a
        for a in attackers
    )
    assert any(
        "corporation_id" in a and "character_id" not in a and "faction_id" not in a
        for a in attackers
    )
    assert any("ship_type_id" not in a for a in attackers)
    assert any("character_id" not in b["victim"] for b in bodies)
    assert any("war_id" in b for b in bodies) and any("moon_id" in b for b in bodies)
    assert any(b["victim"].get("items") == [] for b in bodies)
    assert any("items" not in b["victim"] for b in bodies)
    containers = [i for i in items if "items" in i]
    assert containers and all("items" not in child for c in containers for child in c["items"])
    assert any(
        n > 1
        for b in bodies
        for n in Counter(
            (i["item_type_id"], i["flag"]) for i in b["victim"].get("items", [])
        ).values()
    )
    ids = [
        v
        for b in bodies
        for obj in _walk(b)
        if isinstance(obj, dict)
        for k, v in obj.items()
        if k.endswith("_id")
    ]
    assert any(v > 2**31 for v in ids)
    assert any(2_100_000_000 <= v < 2**31 for v in ids)
    assert any(isinstance(a["security_status"], int) for a in attackers)
    assert any(isinstance(a["security_status"], float) for a in attackers)
    assert any(a["damage_done"] == 0 for a in attackers)


def test_huge_scenario_has_a_3800_attacker_kill() -> None:
    world = World(Scenario.named("huge"), SystemClock())
    sizes = {k: len(world.body(k)["attackers"]) for k in world.killmails}
    killmail_id, size = max(sizes.items(), key=lambda kv: kv[1])
    assert size == 3800
    body = world.body(killmail_id)
    assert "character_id" not in body["victim"]
    assert len({a["character_id"] for a in body["attackers"] if "character_id" in a}) == size
    assert sum(a["final_blow"] for a in body["attackers"]) == 1
    assert world.record(killmail_id).recipients  # type: ignore[union-attr]
    assert world.summary().max_attackers >= 3800


def test_names_are_markup_and_unicode(sim: SimServer, http: httpx.Client) -> None:
    names = {c.name for c in sim.world.characters}
    assert {"[b]Boss[/b]", "Ünïcødé ☠"} <= names
    ids = [c.character_id for c in sim.world.characters]
    response = http.post(f"{sim.esi_url}/universe/names", json=ids)
    assert {r["name"] for r in response.json()} == names
    assert (
        "\\u003c"
        in http.post(
            f"{sim.esi_url}/universe/names",
            json=[
                next(
                    k
                    for k in _all_ids(sim.world)
                    if (sim.world.name(k) or ("", ""))[0] == "<i>x</i>"
                )
            ],
        ).text
    )


def _all_ids(world: World) -> set[int]:
    return {i for k in world.killmails for i in ids_in_body(world.body(k))}


def test_names_resolve_every_id_except_the_unknown_ones(
    make_sim: SimFactory, http: httpx.Client
) -> None:
    sim = make_sim("chaos")
    unknown = set(sim.world.unknown_ids)
    assert len(unknown) == 2
    ids = sorted(_all_ids(sim.world))
    assert unknown <= set(ids)
    known = [i for i in ids if i not in unknown]
    categories: Counter[str] = Counter()
    for start in range(0, len(known), 1000):
        response = http.post(f"{sim.esi_url}/universe/names", json=known[start : start + 1000])
        assert response.status_code == 200
        assert [r["id"] for r in response.json()] == known[start : start + 1000]
        categories.update(r["category"] for r in response.json())
    assert set(categories) == {
        "character",
        "corporation",
        "alliance",
        "faction",
        "inventory_type",
        "solar_system",
    }
    failing = http.post(f"{sim.esi_url}/universe/names", json=[known[0], min(unknown)])
    assert failing.status_code == 404
    assert failing.json() == {"error": "Ensure all IDs are valid before resolving."}


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (list(range(1, 1002)), 400),
        ([1, 1], 400),
        ([], 400),
        ({"ids": [1]}, 400),
        (["1"], 400),
        ([True], 400),
    ],
)
def test_names_rejects_bad_requests(
    sim: SimServer, http: httpx.Client, payload: Any, status: int
) -> None:
    response = http.post(f"{sim.esi_url}/universe/names", content=json.dumps(payload))
    assert response.status_code == status
    assert "error" in response.json()


def test_affiliation_and_entities(sim: SimServer, http: httpx.Client) -> None:
    char = sim.world.characters[0]
    rows = http.post(f"{sim.esi_url}/characters/affiliation", json=[char.character_id]).json()
    assert rows[0]["corporation_id"] == char.corporation_id
    assert rows[0].get("alliance_id") == char.alliance_id
    info = http.get(f"{sim.esi_url}/characters/{char.character_id}").json()
    assert (info["name"], info["corporation_id"]) == (char.name, char.corporation_id)
    corp = http.get(f"{sim.esi_url}/corporations/{char.corporation_id}").json()
    assert corp["alliance_id"] == char.alliance_id
    assert http.get(f"{sim.esi_url}/characters/1").status_code == 404
    assert http.post(f"{sim.esi_url}/characters/affiliation", json=[1]).status_code == 404


def test_same_seed_same_world_other_seed_other_world() -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    a = World(Scenario.named("smoke", seed=11), ManualClock(start))
    b = World(Scenario.named("smoke", seed=11), ManualClock(start))
    c = World(Scenario.named("smoke", seed=12), ManualClock(start))
    later = World(Scenario.named("smoke", seed=11), ManualClock(start + timedelta(days=3)))
    assert a.ground_truth() == b.ground_truth() == later.ground_truth()
    assert [a.body_bytes(k) for k in a.killmails] == [b.body_bytes(k) for k in b.killmails]
    assert a.ground_truth() != c.ground_truth()


def test_added_kills_get_new_ids_and_bodies(sim: SimServer) -> None:
    char = sim.world.character_ids[2]
    before = set(sim.world.killmails)
    first = sim.world.add_kill(victim=char)
    second = sim.world.add_kill(attacker=char)
    assert first not in before and second == first + 1
    assert sim.world.body(second)["killmail_id"] == second
    assert {first, second} <= set(sim.world.ground_truth()[char])
    with pytest.raises(KeyError):
        sim.world.add_kill(victim=1)
    with pytest.raises(ValueError, match="must differ"):
        sim.world.add_kill(victim=char, attacker=char)


def test_tickers_stay_unique_when_many_names_share_a_prefix() -> None:
    """20,000 characters make thousands of corporations; a 3-letter prefix has only 90
    two-digit tickers (the generator looped forever once they ran out)."""
    import random

    from killsim.names import NameMaker

    names = NameMaker(random.Random(1))
    tickers = [names.ticker("Kavel Holdings") for _ in range(2_000)]
    assert len(set(tickers)) == 2_000
    assert all(1 <= len(t) <= 5 and t.isalnum() for t in tickers)
    assert tickers[0] == "KAVE" and tickers[1].startswith("KAV")
