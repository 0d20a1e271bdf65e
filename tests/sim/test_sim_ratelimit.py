"""Token buckets and the error limit, checked with arithmetic on a manual clock."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest

from killsim import (
    FaultPlan,
    ManualClock,
    Scenario,
    SimServer,
    format_limit,
    min_sync_time_s,
    parse_limit,
)
from killsim.ratelimit import token_cost
from tests.sim.sim_helpers import CLIENT_HEADERS, SimFactory, bearer, body_url, list_url

BUCKETS = {"char-killmail": (10, 60), "killmail": (12, 30), "status": (600, 900)}


def _scenario(**changes: object) -> Scenario:
    return replace(Scenario.named("smoke"), buckets=BUCKETS, **changes)  # type: ignore[arg-type]


def _limits(response: httpx.Response) -> tuple[str, str, int, int]:
    h = response.headers
    return (
        h["X-Ratelimit-Group"],
        h["X-Ratelimit-Limit"],
        int(h["X-Ratelimit-Remaining"]),
        int(h["X-Ratelimit-Used"]),
    )


@pytest.fixture
def limited(make_sim: SimFactory, clock: ManualClock) -> SimServer:
    return make_sim(_scenario(), clock=clock)


def test_token_prices_follow_esi_table() -> None:
    assert [token_cost(s) for s in (200, 204, 304, 400, 404, 422, 420, 429, 500, 503)] == [
        2,
        2,
        1,
        5,
        5,
        5,
        5,
        0,
        0,
        0,
    ]


def test_limit_header_format_round_trips() -> None:
    assert format_limit(3600, 900) == "3600/15m"
    assert format_limit(300, 10) == "300/10s"
    assert format_limit(50, 7200) == "50/2h"
    for text in ("3600/15m", "300/10s", "50/2h"):
        assert format_limit(*parse_limit(text)) == text
    assert min_sync_time_s(600, 2, 8000) == (-(-8000 // 601) - 1) * 2.0
    assert min_sync_time_s(30, 900, 20) == 0.0


def test_costs_remaining_and_floating_window_release(
    limited: SimServer, clock: ManualClock, http: httpx.Client
) -> None:
    killmail_id = next(iter(limited.world.killmails))
    url = body_url(limited, killmail_id)

    def at(t_s: float, target: str = url, **kwargs: object) -> httpx.Response:
        clock.advance(t_s - clock.monotonic())
        return http.get(target, **kwargs)  # type: ignore[arg-type]

    first = at(0)
    assert (first.status_code, _limits(first)) == (200, ("killmail", "12/30s", 10, 2))
    etag = first.headers["ETag"]
    cached = at(5, headers={"If-None-Match": etag})
    assert (cached.status_code, _limits(cached)[2:]) == (304, (9, 1))
    wrong = at(10, body_url(limited, killmail_id, "f" * 40))
    assert (wrong.status_code, _limits(wrong)[2:]) == (422, (4, 5))
    limited.faults.fail_body(killmail_id, status=500)
    broken = at(12)
    assert (broken.status_code, _limits(broken)[2:]) == (500, (4, 0))
    missing = at(15, body_url(limited, 1, "f" * 40))  # admitted with 4 left, costs 5
    assert (missing.status_code, _limits(missing)[2:]) == (404, (0, 5))
    # 13 tokens in use, 12 allowed: the 2 spent at t=0 come back at t=30.
    for t_s, retry_s in ((16, 14), (16, 14), (29.5, 1)):
        refused = at(t_s)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == str(retry_s)
        assert _limits(refused)[2:] == (0, 0)  # a 429 is free
    assert at(30).status_code == 200  # 11 in use: admitted, 13 after
    # Now the 1 spent at t=5 is not enough: the 5 spent at t=10 free the bucket at t=40.
    assert at(31).headers["Retry-After"] == "9"
    assert at(35).headers["Retry-After"] == "5"
    assert _limits(at(40))[2:] == (12 - 7 - 2, 2)


def test_list_bucket_is_per_application_and_character(
    limited: SimServer, http: httpx.Client
) -> None:
    first, second = limited.world.character_ids[:2]
    token = limited.access_token(first)
    answers = [http.get(list_url(limited, first), headers=bearer(token)) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert [_limits(a)[2] for a in answers[:5]] == [8, 6, 4, 2, 0]
    assert answers[0].headers["X-Ratelimit-Group"] == "char-killmail"
    other_character = http.get(
        list_url(limited, second), headers=bearer(limited.access_token(second))
    )
    assert (other_character.status_code, _limits(other_character)[2]) == (200, 8)
    other_app = http.get(
        list_url(limited, first),
        headers=bearer(limited.access_token(first, client_id="another-app")),
    )
    assert (other_app.status_code, _limits(other_app)[2]) == (200, 8)
    stats = limited.stats.snapshot()
    assert stats.tokens_spent["char-killmail"][f"{limited.client_id}:{first}"] == 10
    assert stats.tokens_spent_in("char-killmail") == 14


def test_body_bucket_is_per_ip_or_ip_and_application(
    limited: SimServer, http: httpx.Client
) -> None:
    url = body_url(limited, next(iter(limited.world.killmails)))
    anonymous = [http.get(url).status_code for _ in range(7)]
    assert anonymous == [200] * 6 + [429]
    with_token = http.get(url, headers=bearer(limited.access_token(limited.world.character_ids[0])))
    assert (with_token.status_code, _limits(with_token)[2]) == (200, 10)
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, headers=CLIENT_HEADERS, timeout=10) as other_host:
        elsewhere = other_host.get(url)
    assert (elsewhere.status_code, _limits(elsewhere)[2]) == (200, 10)
    assert set(limited.stats.snapshot().tokens_spent["killmail"]) == {
        "127.0.0.1",
        f"127.0.0.1:{limited.client_id}",
        "127.0.0.2",
    }


def test_concurrent_requests_cannot_overspend(make_sim: SimFactory, clock: ManualClock) -> None:
    # 50 ms latency keeps requests in flight together: admission must reserve tokens.
    limited = make_sim(_scenario(faults=FaultPlan(latency_ms=50)), clock=clock)
    url = body_url(limited, next(iter(limited.world.killmails)))
    with (
        httpx.Client(headers=CLIENT_HEADERS, timeout=10) as client,
        ThreadPoolExecutor(max_workers=10) as pool,
    ):
        statuses = list(pool.map(lambda _: client.get(url).status_code, range(20)))
    assert sorted(statuses) == [200] * 6 + [429] * 14  # 12 tokens, 2 reserved per request
    assert limited.stats.snapshot().peak_concurrent >= 4


def test_compressed_limits_are_announced(make_sim: SimFactory, http: httpx.Client) -> None:
    sim = make_sim(replace(Scenario.named("smoke"), buckets={"killmail": (300, 10)}))
    response = http.get(body_url(sim, next(iter(sim.world.killmails))))
    assert response.headers["X-Ratelimit-Limit"] == "300/10s"
    status = http.get(f"{sim.esi_url}/status")  # no bucket for the group in this scenario
    assert status.status_code == 200
    assert "X-Ratelimit-Group" not in status.headers


def test_routes_without_group_carry_only_the_error_limit(
    limited: SimServer, http: httpx.Client
) -> None:
    names = http.post(f"{limited.esi_url}/universe/names", json=[limited.world.character_ids[0]])
    assert names.status_code == 200
    assert "X-Ratelimit-Group" not in names.headers
    assert names.headers["X-ESI-Error-Limit-Remain"] == "100"
    status = http.get(f"{limited.esi_url}/status")
    assert _limits(status) == ("status", "600/15m", 598, 2)


def test_error_limit_gives_420_everywhere_until_the_window_resets(
    make_sim: SimFactory, clock: ManualClock, http: httpx.Client
) -> None:
    sim = make_sim(_scenario(error_limit=5, error_window_s=10), clock=clock)
    ok = http.get(f"{sim.esi_url}/status")
    assert (ok.headers["X-ESI-Error-Limit-Remain"], ok.headers["X-ESI-Error-Limit-Reset"]) == (
        "5",
        "10",
    )
    clock.advance(2)
    remains = [
        http.get(f"{sim.esi_url}/no/such/route").headers["X-ESI-Error-Limit-Remain"]
        for _ in range(5)
    ]
    assert remains == ["4", "3", "2", "1", "0"]
    char = sim.world.character_ids[0]
    blocked = [
        http.get(f"{sim.esi_url}/status"),
        http.get(body_url(sim, next(iter(sim.world.killmails)))),
        http.get(list_url(sim, char), headers=bearer(sim.access_token(char))),
        http.post(f"{sim.esi_url}/universe/names", json=[char]),
        http.get(f"{sim.esi_url}/no/such/route"),
    ]
    assert [b.status_code for b in blocked] == [420] * 5
    assert blocked[0].json()["error"].startswith("This software has exceeded the error limit")
    assert blocked[0].headers["X-ESI-Error-Limit-Reset"] == "8"
    clock.advance(7.5)
    assert http.get(f"{sim.esi_url}/status").headers["X-ESI-Error-Limit-Reset"] == "1"
    clock.advance(0.5)
    recovered = http.get(f"{sim.esi_url}/status")
    assert recovered.status_code == 200
    assert recovered.headers["X-ESI-Error-Limit-Remain"] == "5"
    # the 420s cost no tokens: two /status answers so far
    assert _limits(recovered)[2] == 600 - 2 * 2


def test_429s_count_against_the_error_limit(
    make_sim: SimFactory, clock: ManualClock, http: httpx.Client
) -> None:
    sim = make_sim(_scenario(error_limit=8, error_window_s=60), clock=clock)
    url = body_url(sim, next(iter(sim.world.killmails)))
    answers = [http.get(url) for _ in range(8)]
    assert [a.status_code for a in answers] == [200] * 6 + [429] * 2
    assert answers[-1].headers["X-ESI-Error-Limit-Remain"] == "6"
