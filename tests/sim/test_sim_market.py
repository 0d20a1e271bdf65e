"""The simulator's market and universe routes: CCP's shapes and headers, the history's
11:05 UTC refresh and per-minute limit, and EVE Ref-style archives of the same history."""

from __future__ import annotations

import bz2
import dataclasses
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from killsim import ManualClock, Scenario
from killsim.market import (
    ARCHIVE_COLUMNS,
    THE_FORGE,
    Market,
    last_history_day,
    read_archive_rows,
    write_history_archives,
)
from tests.sim.sim_helpers import OpenApi, SimFactory


def _check(openapi: OpenApi, template: str, response: httpx.Response) -> object:
    assert response.status_code == 200, response.text
    payload = response.json()
    name = openapi.response_schema_name(template)
    openapi.validate(name, payload)
    openapi.assert_no_extra_keys(name, payload)
    missing = {h for h in openapi.documented_headers(template) if h.lower() not in response.headers}
    assert not missing, missing
    return payload


def test_market_and_universe_routes_match_their_schemas(
    make_sim: SimFactory, openapi: OpenApi
) -> None:
    clock = ManualClock(datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    sim = make_sim("market", clock=clock)
    with httpx.Client(base_url=sim.esi_url) as http:
        rows = _check(
            openapi,
            "/markets/{region_id}/history",
            http.get(f"/markets/{THE_FORGE}/history", params={"type_id": 587}),
        )
        assert isinstance(rows, list) and rows[-1]["date"] == "2026-11-29"  # before 11:05
        prices = _check(openapi, "/markets/prices", http.get("/markets/prices"))
        assert isinstance(prices, list) and all("type_id" in p for p in prices)
        for template, value in (
            ("/universe/groups/{group_id}", 1950),
            ("/universe/categories/{category_id}", 91),
            ("/universe/constellations/{constellation_id}", 20000000),
            ("/universe/types/{type_id}", 691),
        ):
            _check(openapi, template, http.get(template.split("{")[0] + str(value)))
        group = http.get("/universe/groups/1950").json()
        assert group["category_id"] == 91 and 44131 in group["types"]
        jita = http.get("/universe/systems/30000142").json()
        constellation = http.get(f"/universe/constellations/{jita['constellation_id']}").json()
        assert constellation["region_id"] == THE_FORGE and 30000142 in constellation["systems"]
        for path, status in (
            ("/markets/10000002/history", 400),  # no type_id
            ("/markets/10000002/history?type_id=abc", 400),
            ("/markets/99/history?type_id=587", 400),  # a region without a market
            ("/markets/10000002/history?type_id=123456789", 404),
            ("/universe/groups/424242", 404),
            ("/universe/constellations/1", 404),
        ):
            answer = http.get(path)
            assert answer.status_code == status, path
            openapi.validate("Error", answer.json())


def test_history_expires_at_11_05_and_moves_a_day_then(make_sim: SimFactory) -> None:
    clock = ManualClock(datetime(2026, 12, 1, 11, 0, tzinfo=UTC))
    sim = make_sim("market", clock=clock)
    with httpx.Client(base_url=sim.esi_url) as http:
        before = http.get("/markets/10000002/history", params={"type_id": 587})
        clock.advance(6 * 60)
        after = http.get("/markets/10000002/history", params={"type_id": 587})
        capsule = http.get("/markets/10000002/history", params={"type_id": 670})
    assert parsedate_to_datetime(before.headers["Expires"]) == datetime(
        2026, 12, 1, 11, 5, tzinfo=UTC
    )
    assert parsedate_to_datetime(after.headers["Expires"]) == datetime(
        2026, 12, 2, 11, 5, tzinfo=UTC
    )
    assert before.json()[-1]["date"] == "2026-11-29"
    assert after.json()[-1]["date"] == "2026-11-30"
    assert after.json()[:-1] == before.json()[1:]  # the same days, the same prices
    assert capsule.status_code == 200 and capsule.json() == []  # capsules never trade


def test_the_history_route_answers_500_beyond_its_per_minute_limit(make_sim: SimFactory) -> None:
    clock = ManualClock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    scenario = dataclasses.replace(Scenario.named("market"), market_history_limit=5)
    sim = make_sim(scenario, clock=clock)
    with httpx.Client(base_url=sim.esi_url) as http:

        def ask() -> int:
            return http.get("/markets/10000002/history", params={"type_id": 587}).status_code

        assert [ask() for _ in range(7)] == [200] * 5 + [500] * 2
        clock.advance(59)
        assert ask() == 500  # a minute's wait from the first refusal
        clock.advance(2)
        assert ask() == 200
        assert http.get("/markets/prices").status_code == 200  # other routes are not limited
    assert (sim.market_history_limiter.answered, sim.market_history_limiter.refused) == (6, 3)


def test_archives_hold_the_same_history_as_the_route(make_sim: SimFactory, tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    sim = make_sim("market", clock=clock)
    market = Market(sim.world.item_types())
    day = last_history_day(clock.now())
    [path] = write_history_archives(tmp_path, market, [day], regions=(THE_FORGE, 10000043))
    assert path == tmp_path / "market-history" / "2026" / "market-history-2026-11-30.csv.bz2"
    raw = bz2.decompress(path.read_bytes())
    assert raw.startswith(",".join(ARCHIVE_COLUMNS).encode() + b"\r\n")
    rows = read_archive_rows(path)
    keys = [(int(r["region_id"]), int(r["type_id"])) for r in rows]
    assert keys == sorted(keys)  # by region, then type
    assert {r["http_last_modified"] for r in rows} == {"2026-12-01T11:05:00Z"}
    with httpx.Client(base_url=sim.esi_url) as http:
        for type_id in market.traded_type_ids()[:5]:
            served = http.get("/markets/10000002/history", params={"type_id": type_id}).json()
            archived = next(
                r for r in rows if r["type_id"] == str(type_id) and r["region_id"] == "10000002"
            )
            assert served[-1]["date"] == archived["date"] == day.isoformat()
            assert served[-1]["average"] == float(archived["average"])
            assert served[-1]["volume"] == int(archived["volume"])
    untraded = {t.type_id for t in sim.world.item_types()} - set(market.traded_type_ids())
    assert 670 in untraded  # capsules never trade
    assert len(untraded) > 1  # nor a few others


def test_some_types_are_only_in_markets_prices() -> None:
    from killsim import SystemClock, World

    world = World(Scenario.named("market"), SystemClock())
    market = Market(world.item_types())
    listed = {row["type_id"] for row in market.prices(date(2026, 11, 30))}
    no_history = {t.type_id for t in world.item_types()} - set(market.traded_type_ids())
    assert no_history & listed  # the fallback's case
    assert no_history - listed  # and types with no price at all
    assert set(market.traded_type_ids()) <= listed
