"""The ESI client and the SSO client against the simulator, over real HTTP.

Most tests run the simulator on a manual clock that the client's sleeps advance, so
minutes of rate-limit waiting take no time; the threaded test runs in real time on a
compressed one-second window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from killcli.clock import SYSTEM_CLOCK
from killcli.clock import SystemClock as HostClock
from killcli.errors import EsiHttpError, NeedsLogin
from killcli.esi import (
    Clock,
    EsiClient,
    ListPageResult,
    RateLimiter,
)
from killcli.sso import SsoClient, run_login
from killcli.sync.listwalk import walk_character_list
from killsim import ManualClock, Scenario, SigningKeys, SimServer, SystemClock

UA = "killsync/test (ops@example.org)"
BODY_ROUTE = "/killmails/{killmail_id}/{killmail_hash}"


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.generate()


def clock_of(sim_clock: ManualClock) -> Clock:
    """The library's clock over the simulator's: every sleep moves simulated time."""
    return HostClock(
        monotonic=sim_clock.monotonic,
        wall=lambda: sim_clock.now().timestamp(),
        sleep=lambda s: sim_clock.advance(max(0.0, s)),
    )


Start = Callable[..., tuple[SimServer, EsiClient]]


@pytest.fixture
def start(keys: SigningKeys) -> Iterator[Start]:
    """Start a simulator and a client for it; both are stopped after the test."""
    opened: list[tuple[SimServer, EsiClient]] = []

    def run(
        scenario: Scenario, *, manual: bool = True, **limiter: object
    ) -> tuple[SimServer, EsiClient]:
        sim_clock = ManualClock() if manual else SystemClock()
        clock = clock_of(sim_clock) if isinstance(sim_clock, ManualClock) else SYSTEM_CLOCK
        sim = SimServer(scenario, clock=sim_clock, keys=keys).start()
        client = EsiClient(
            sim.esi_url,
            user_agent=UA,
            limiter=RateLimiter(clock=clock, **limiter),  # type: ignore[arg-type]
            clock=clock,
        )
        opened.append((sim, client))
        return sim, client

    yield run
    for sim, client in opened:
        client.close()
        sim.stop()


def test_walks_and_bodies_match_the_ground_truth(start: Start) -> None:
    sim, client = start(replace(Scenario.named("smoke"), page_size=7))
    truth = sim.world.ground_truth()
    for character_id, expected in truth.items():
        token = sim.access_token(character_id)
        walk = walk_character_list(client, character_id, token).walk
        assert dict(walk.items) == expected
        assert walk.pages == max(1, -(-len(expected) // 7))
    some = next(iter(truth.values()))
    for killmail_id, killmail_hash in list(some.items())[:5]:
        assert client.fetch_killmail(killmail_id, killmail_hash) == sim.world.body(killmail_id)
    stats = sim.stats.snapshot()
    assert stats.without_compatibility_date == 0 and stats.without_user_agent == 0
    assert stats.rate_limited == 0 and stats.error_limited == 0


def test_a_second_walk_is_one_304(start: Start) -> None:
    sim, client = start(Scenario.named("smoke"))
    character_id = sim.world.character_ids[0]
    token = sim.access_token(character_id)
    first = walk_character_list(client, character_id, token).first
    assert first is not None
    before = sim.stats.snapshot().total
    again = walk_character_list(client, character_id, token, etag=first.etag).walk
    assert again.not_modified and again.pages_read == 1
    assert sim.stats.snapshot().total == before + 1
    assert client.stats.snapshot().not_modified == 1


def test_tiny_buckets_are_paced_without_a_single_429(start: Start) -> None:
    sim, client = start(Scenario.named("ratelimit"))
    character_id = sim.world.character_ids[0]
    truth = sim.world.ground_truth()[character_id]
    token = sim.access_token(character_id, lifetime_s=10**6)
    for _ in range(3):  # list pages: char-killmail 10/5s, 4 pages a full walk
        walk = walk_character_list(client, character_id, token).walk  # no ETag: in full
        assert dict(walk.items) == truth
    for killmail_id, killmail_hash in truth.items():  # bodies: killmail 20/5s
        client.fetch_killmail(killmail_id, killmail_hash)
    stats = sim.stats.snapshot()
    assert stats.rate_limited == 0
    assert stats.count(BODY_ROUTE, 200) == len(truth)
    assert client.limiter is not None
    assert client.limiter.snapshot().waited_s["bucket"] > 0


def test_threads_fill_a_real_bucket_without_overdrawing(start: Start) -> None:
    scenario = replace(
        Scenario.named("smoke"),
        buckets={"char-killmail": (30, 900), "killmail": (30, 1), "status": (600, 900)},
    )
    sim, client = start(scenario, manual=False)
    # (30 - 2 margin) / 2 = 14 bodies a second: 30 bodies take a little over 2 s.
    truth = [pair for kills in sim.world.ground_truth().values() for pair in kills.items()][:30]
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda pair: client.fetch_killmail(*pair), truth))
    assert [b["killmail_id"] for b in bodies] == [k for k, _ in truth]
    assert sim.stats.snapshot().rate_limited == 0


def test_faults_are_retried_and_a_wrong_hash_is_not(start: Start) -> None:
    sim, client = start(Scenario.named("smoke"))
    (killmail_id, killmail_hash), *_ = next(iter(sim.world.ground_truth().values())).items()
    sim.faults.fail_body(killmail_id, status=502)
    sim.faults.malformed_body(killmail_id)
    sim.faults.truncated_body(killmail_id)
    assert client.fetch_killmail(killmail_id, killmail_hash) == sim.world.body(killmail_id)
    assert client.stats.snapshot().total_retries == 3
    with pytest.raises(EsiHttpError) as caught:
        client.fetch_killmail(killmail_id, "0" * 40)
    assert caught.value.status == 422


def test_the_error_limit_is_never_tripped(start: Start) -> None:
    scenario = replace(Scenario.named("smoke"), error_limit=10, error_window_s=30)
    sim, client = start(scenario, error_limit_threshold=3)
    killmail_id = next(iter(sim.world.ground_truth().values())).popitem()[0]
    for _ in range(20):
        with pytest.raises(EsiHttpError):
            client.fetch_killmail(killmail_id, "0" * 40)
    assert sim.stats.snapshot().error_limited == 0
    assert client.limiter is not None
    assert client.limiter.snapshot().waited_s["error_limit"] >= 30


def test_a_list_refreshed_mid_walk_is_walked_again(start: Start) -> None:
    sim, client = start(replace(Scenario.named("smoke"), page_size=5))
    character_id = sim.world.character_ids[0]
    token = sim.access_token(character_id)
    added: list[int] = []

    def refresh_after_page_one(page: ListPageResult) -> None:
        if page.page == 1 and not added:
            assert isinstance(sim.clock, ManualClock)
            sim.clock.advance(2)  # the rebuilt list gets a later Last-Modified
            added.append(sim.world.add_kill(victim=character_id))
            sim.faults.refresh_list(character_id)

    walk = walk_character_list(client, character_id, token, on_page=refresh_after_page_one).walk
    assert walk.restarts == 1
    assert dict(walk.items) == sim.world.ground_truth()[character_id]
    assert added[0] in dict(walk.items)


def test_sso_refresh_rotation_validation_and_revocation(keys: SigningKeys) -> None:
    scenario = replace(Scenario.named("smoke"), signing="alternate")
    with (
        SimServer(scenario, keys=keys) as sim,
        SsoClient(sim.sso_url, sim.client_id, sim.client_secret) as sso,
    ):
        character_id = sim.world.character_ids[0]
        first = sso.refresh(sim.issue_refresh_token(character_id))
        second = sso.refresh(first.refresh_token)  # alternating RS256 / ES256 signatures
        assert second.refresh_token != first.refresh_token
        assert {first.claims.character_id, second.claims.character_id} == {character_id}
        assert second.claims.owner_hash == sim.owner_hash(character_id)
        sim.revoke(character_id)
        with pytest.raises(NeedsLogin) as caught:
            sso.refresh(second.refresh_token)
        assert caught.value.reason == "invalid_grant"


def test_browser_login_against_the_simulated_sso(keys: SigningKeys) -> None:
    scenario = replace(Scenario.named("smoke"), client_kind="pkce")
    with SimServer(scenario, keys=keys) as sim, SsoClient(sim.sso_url, sim.client_id) as sso:
        visits: list[threading.Thread] = []
        pages: list[httpx.Response] = []

        def browser(url: str) -> None:
            assert parse_qs(urlsplit(url).query)["code_challenge_method"] == ["S256"]

            def visit() -> None:
                with httpx.Client(trust_env=False, follow_redirects=True, timeout=5) as http:
                    pages.append(http.get(url))

            visits.append(threading.Thread(target=visit))
            visits[0].start()

        tokens = run_login(
            sso,
            "http://127.0.0.1:0/callback",
            ["esi-killmails.read_killmails.v1"],
            open_browser=False,
            timeout_s=10,
            on_url=browser,
        )
        visits[0].join(timeout=5)
        assert tokens.claims.character_id == sim.world.character_ids[0]
        assert "esi-killmails.read_killmails.v1" in tokens.claims.scopes
        assert pages[0].status_code == 200 and "Logged in" in pages[0].text
