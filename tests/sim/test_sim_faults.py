"""Faults: on demand, by scenario (deterministic by seed), downtime, stalls, latency."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import httpx
import pytest

from killsim import FaultPlan, ManualClock, Scenario, SimServer
from tests.sim.sim_helpers import CLIENT_HEADERS, SimFactory, bearer, body_url, list_url


def test_failures_on_demand_then_recovery(sim: SimServer, http: httpx.Client) -> None:
    killmail_id = next(iter(sim.world.killmails))
    url = body_url(sim, killmail_id)
    sim.faults.fail_body(killmail_id, status=500, times=2)
    sim.faults.fail_body(killmail_id, status=422)
    sim.faults.malformed_body(killmail_id)
    statuses = [http.get(url).status_code for _ in range(3)]
    assert statuses == [500, 500, 422]
    malformed = http.get(url)
    assert malformed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.content)
    assert http.get(url).json() == sim.world.body(killmail_id)


def test_truncated_body_drops_the_connection(sim: SimServer, http: httpx.Client) -> None:
    killmail_id = next(iter(sim.world.killmails))
    sim.faults.truncated_body(killmail_id)
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(body_url(sim, killmail_id))
    assert http.get(body_url(sim, killmail_id)).status_code == 200  # a new connection works


def test_list_failure_on_demand(sim: SimServer, http: httpx.Client) -> None:
    char = sim.world.character_ids[0]
    sim.faults.fail_list(char, status=503)
    token = bearer(sim.access_token(char))
    assert http.get(list_url(sim, char), headers=token).status_code == 503
    assert http.get(list_url(sim, char), headers=token).status_code == 200


def test_stall_outlasts_the_client_and_counts_as_an_error(sim: SimServer) -> None:
    killmail_id = next(iter(sim.world.killmails))
    sim.faults.stall_body(killmail_id, seconds=3)
    with httpx.Client(headers=CLIENT_HEADERS, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.get(body_url(sim, killmail_id))
        status = impatient.get(f"{sim.esi_url}/status")
    assert status.headers["X-ESI-Error-Limit-Remain"] == "99"
    assert sim.stats.snapshot().stalls == 1


def test_downtime_window_answers_503_on_every_route(
    make_sim: SimFactory, clock: ManualClock, http: httpx.Client
) -> None:
    sim = make_sim(
        replace(Scenario.named("smoke"), faults=FaultPlan(downtime_s=(10.0, 20.0))), clock=clock
    )
    char = sim.world.character_ids[0]
    urls = [f"{sim.esi_url}/status", body_url(sim, next(iter(sim.world.killmails)))]
    assert [http.get(u).status_code for u in urls] == [200, 200]
    clock.advance(10)
    assert [http.get(u).status_code for u in urls] == [503, 503]
    listed = http.get(list_url(sim, char), headers=bearer(sim.access_token(char)))
    assert (listed.status_code, listed.headers["X-Ratelimit-Used"]) == (503, "0")  # 5xx: free
    clock.advance(10)
    assert [http.get(u).status_code for u in urls] == [200, 200]
    sim.faults.start_downtime(5)
    assert http.get(urls[0]).status_code == 503


def _statuses(sim: SimServer, ids: list[int]) -> list[int]:
    with httpx.Client(headers=CLIENT_HEADERS, timeout=10) as client:
        return [client.get(body_url(sim, k)).status_code for k in ids for _ in range(2)]


def test_random_faults_are_deterministic_by_seed(make_sim: SimFactory) -> None:
    plan = FaultPlan(server_error_rate={"body": 0.3})
    scenario = replace(Scenario.named("smoke", seed=4), faults=plan, error_limit=10**6)
    first, second = make_sim(scenario), make_sim(scenario)
    other = make_sim(replace(scenario, seed=5))
    ids = sorted(first.world.killmails)[:40]
    statuses = _statuses(first, ids)
    assert _statuses(second, ids) == statuses
    assert 5 < sum(s >= 500 for s in statuses) < 45
    assert set(statuses) <= {200, 500, 502, 503, 504}
    assert _statuses(other, sorted(other.world.killmails)[:40]) != statuses


def test_order_does_not_change_the_faults(make_sim: SimFactory) -> None:
    plan = FaultPlan(server_error_rate={"body": 0.3}, malformed_rate=0.1)
    scenario = replace(Scenario.named("smoke", seed=9), faults=plan, error_limit=10**6)
    a, b = make_sim(scenario), make_sim(scenario)
    ids = sorted(a.world.killmails)[:30]
    forward = dict(zip(ids, _pairs(a, ids), strict=True))
    backward = dict(zip(reversed(ids), _pairs(b, list(reversed(ids))), strict=True))
    assert forward == backward


def _pairs(sim: SimServer, ids: list[int]) -> list[tuple[int, int]]:
    statuses = _statuses(sim, ids)
    return list(zip(statuses[::2], statuses[1::2], strict=True))


def test_latency_with_jitter(make_sim: SimFactory, http: httpx.Client) -> None:
    sim = make_sim(replace(Scenario.named("smoke"), faults=FaultPlan(latency_ms=60, jitter_ms=20)))
    started = time.monotonic()
    for killmail_id in sorted(sim.world.killmails)[:5]:
        assert http.get(body_url(sim, killmail_id)).status_code == 200
    assert time.monotonic() - started >= 5 * 0.040


def test_chaos_scenario_mixes_every_fault(make_sim: SimFactory) -> None:
    sim = make_sim(
        replace(
            Scenario.named("chaos", seed=2),
            faults=replace(
                Scenario.named("chaos").faults,
                stall_s=0.5,
                latency_ms=0,
                jitter_ms=0,
                downtime_s=None,
            ),
        )
    )
    outcomes: dict[str, int] = {}
    with httpx.Client(headers=CLIENT_HEADERS, timeout=0.3) as client:
        for killmail_id in sorted(sim.world.killmails):
            try:
                response = client.get(body_url(sim, killmail_id))
                json.loads(response.content)
                key = str(response.status_code)
            except httpx.TimeoutException:
                key = "timeout"
            except httpx.RemoteProtocolError:
                key = "truncated"
            except json.JSONDecodeError:
                key = "malformed"
            outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes["200"] > 200
    assert {"timeout", "truncated", "malformed"} <= set(outcomes)
    assert any(k.startswith("5") for k in outcomes)
