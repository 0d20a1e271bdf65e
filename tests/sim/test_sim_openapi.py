"""Every route the simulator serves answers what CCP's OpenAPI documents describe."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import httpx
import pytest

from killsim import ESI_BUCKETS, Scenario, SimServer, SystemClock, World, ids_in_body
from killsim.esi import ROUTES
from tests.refdata import REDERIVE, killmail_samples, openapi_2026
from tests.sim.sim_helpers import OpenApi, bearer, body_url, list_url


def _get(http: httpx.Client, url: str, **kwargs: Any) -> httpx.Response:
    response = http.get(url, **kwargs)
    assert response.status_code == 200, response.text
    return response


def _check(openapi: OpenApi, path: str, response: httpx.Response, method: str = "get") -> Any:
    """Validate the body against the route's schema; documented headers must be there."""
    payload = response.json()
    name = openapi.response_schema_name(path, method)
    openapi.validate(name, payload)
    openapi.assert_no_extra_keys(name, payload)
    missing = {
        h for h in openapi.documented_headers(path, method) if h.lower() not in response.headers
    }
    assert not missing, f"{path}: documented headers missing: {missing}"
    return payload


def test_killmail_routes_match_their_schemas(
    sim: SimServer, http: httpx.Client, openapi: OpenApi
) -> None:
    char = sim.world.characters[0].character_id
    token = sim.access_token(char)
    rows = _check(
        openapi,
        "/characters/{character_id}/killmails/recent",
        _get(http, list_url(sim, char), headers=bearer(token)),
    )
    assert rows, "the first character's list should not be empty"
    for killmail_id in list(sim.world.killmails)[:40]:
        body = _check(
            openapi,
            "/killmails/{killmail_id}/{killmail_hash}",
            _get(http, body_url(sim, killmail_id)),
        )
        assert body == sim.world.body(killmail_id)


@pytest.mark.parametrize(("name", "sample"), [("chaos", 400), ("huge", 40), ("fleet", 250)])
def test_generated_bodies_are_valid_killmails(name: str, sample: int, openapi: OpenApi) -> None:
    world = World(Scenario.named(name, seed=3), SystemClock())
    ids = sorted(world.killmails)
    for killmail_id in ids[:: max(1, len(ids) // sample)]:
        body = world.body(killmail_id)
        openapi.validate("KillmailsKillmailIdKillmailHashGet", body)
        openapi.assert_no_extra_keys("KillmailsKillmailIdKillmailHashGet", body)


def test_lookup_routes_match_their_schemas(
    sim: SimServer, http: httpx.Client, openapi: OpenApi
) -> None:
    body = sim.world.body(next(iter(sim.world.killmails)))
    attacker = next(a for a in body["attackers"] if "character_id" in a)
    corp = sim.world.character(attacker["character_id"])
    assert corp is not None
    names = http.post(f"{sim.esi_url}/universe/names", json=sorted(ids_in_body(body)))
    assert names.status_code == 200
    _check(openapi, "/universe/names", names, "post")
    affiliation = http.post(
        f"{sim.esi_url}/characters/affiliation", json=[c.character_id for c in sim.world.characters]
    )
    assert affiliation.status_code == 200
    _check(openapi, "/characters/affiliation", affiliation, "post")
    alliance_id = next(c.alliance_id for c in sim.world.characters if c.alliance_id)
    for path, value in (
        ("/characters/{character_id}", attacker["character_id"]),
        ("/corporations/{corporation_id}", corp.corporation_id),
        ("/alliances/{alliance_id}", alliance_id),
        ("/universe/types/{type_id}", body["victim"]["ship_type_id"]),
        ("/universe/systems/{system_id}", body["solar_system_id"]),
    ):
        url = sim.esi_url + re.sub(r"\{\w+\}", str(value), path)
        _check(openapi, path, _get(http, url))
    status = _check(openapi, "/status", _get(http, f"{sim.esi_url}/status"))
    assert status["players"] > 0


def test_error_bodies_match_the_error_schema(
    sim: SimServer, http: httpx.Client, openapi: OpenApi
) -> None:
    killmail_id = next(iter(sim.world.killmails))
    answers = [
        http.get(body_url(sim, killmail_id, "0" * 40)),
        http.get(body_url(sim, 1, "0" * 40)),
        http.get(list_url(sim, sim.world.characters[0].character_id)),
        http.post(f"{sim.esi_url}/universe/names", json=[1, 2]),
        http.get(f"{sim.esi_url}/no/such/route"),
    ]
    assert [a.status_code for a in answers] == [422, 404, 401, 404, 404]
    for answer in answers:
        openapi.validate("Error", answer.json())


SAMPLES = killmail_samples()


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sample_killmails_use_only_shapes_the_simulator_produces(
    name: str, openapi: OpenApi
) -> None:
    """The key sets of a sample body (built, or CCP's real one) appear in generated bodies."""
    body = json.loads(SAMPLES[name])
    openapi.validate("KillmailsKillmailIdKillmailHashGet", body)  # the sample is a valid killmail
    real_shapes, sim_shapes = _shapes([body]), _smoke_shapes()
    assert real_shapes["attacker"] <= sim_shapes["attacker"]
    assert real_shapes["victim"] <= sim_shapes["victim"]
    assert real_shapes["item"] <= sim_shapes["item"]


@cache
def _smoke_shapes() -> dict[str, set[frozenset[str]]]:
    """The key sets of every body of the smoke scenario (the world ``make_sim`` serves)."""
    world = World(Scenario.named("smoke", seed=1), SystemClock())
    return _shapes([world.body(k) for k in world.killmails])


def _shapes(bodies: list[dict[str, Any]]) -> dict[str, set[frozenset[str]]]:
    shapes: dict[str, set[frozenset[str]]] = {"attacker": set(), "victim": set(), "item": set()}
    for body in bodies:
        shapes["victim"].update({frozenset(body["victim"]) - {"alliance_id", "items"}})
        for attacker in body["attackers"]:
            shapes["attacker"].add(frozenset(attacker) - {"alliance_id"})
        for item in body["victim"].get("items", []):
            shapes["item"].add(frozenset(item))
    return shapes


@pytest.mark.parametrize(
    ("route", "group", "cache_s"),
    [
        ("/characters/{character_id}/killmails/recent", "char-killmail", 300),
        ("/corporations/{corporation_id}/killmails/recent", "corp-killmail", 300),
        ("/characters/{character_id}/roles", "char-detail", 3600),
        ("/killmails/{killmail_id}/{killmail_hash}", "killmail", None),
        ("/status", "status", 30),
    ],
)
def test_rate_limit_groups_match_the_2026_document(
    route: str, group: str, cache_s: int | None
) -> None:
    operation = openapi_2026()["paths"][route]["get"]
    limit = operation["x-rate-limit"]
    window = re.fullmatch(r"(\d+)m", limit["window-size"])
    assert window is not None, limit
    assert limit["group"] == group
    assert ESI_BUCKETS[group] == (limit["max-tokens"], int(window.group(1)) * 60)
    if cache_s is not None:
        assert operation["x-cache-age"] == cache_s


def test_every_served_route_is_in_the_document(openapi: OpenApi) -> None:
    for route in ROUTES:
        assert route.template in openapi.doc["paths"], f"{route.template}: {REDERIVE}"
        operation = openapi.doc["paths"][route.template][route.method.lower()]
        assert "200" in operation["responses"]
        scopes = [s for req in operation.get("security", []) for s in req.get("OAuth2", [])]
        assert scopes == ([route.scope] if route.scope else [])
