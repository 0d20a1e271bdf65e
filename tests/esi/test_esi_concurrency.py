"""One client, one limiter, many threads: the bucket is used fully and never overdrawn.

These tests run on :class:`SimulatedClock`: simulated time moves only while every worker
thread sleeps, so the elapsed time measures the limiter's waits, not thread scheduling.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import pytest

from killcli.esi import EsiClient, RateLimiter
from tests.esi.conftest import BASE_URL, UA
from tests.esi.esi_fakes import FakeEsi, SimulatedClock, hash_of

THREADS = 8


@pytest.fixture
def sim() -> SimulatedClock:
    return SimulatedClock()


@pytest.fixture
def sim_fake(sim: SimulatedClock) -> FakeEsi:
    return FakeEsi(sim)


@pytest.fixture
def sim_client(sim: SimulatedClock, sim_fake: FakeEsi) -> Iterator[EsiClient]:
    limiter = RateLimiter(clock=sim)
    with EsiClient(
        BASE_URL,
        user_agent=UA,
        transport=httpx.MockTransport(sim_fake),
        limiter=limiter,
        clock=sim,
        rand=lambda: 0.5,
    ) as client:
        yield client


def test_threads_share_the_killmail_bucket_at_full_speed_without_a_429(
    sim_client: EsiClient, sim_fake: FakeEsi, sim: SimulatedClock
) -> None:
    sim_fake.limits["killmail"] = (40, 900.0)
    bodies = sim.run(lambda i: sim_client.fetch_killmail(i, hash_of(i)), range(1, 151), THREADS)
    assert [b["killmail_id"] for b in bodies] == list(range(1, 151))
    assert sim_fake.over_limit == 0
    assert sim_fake.buckets.peak_used[("killmail", None)] <= 40
    # (40 - 2 margin) / 2 = 19 fetches per window: 150 need 8 windows, the last one
    # starting 7 windows in. Near-full use: only the probe's polling as slack.
    optimum_s = (math.ceil(150 / ((40 - 2) // 2)) - 1) * 900
    assert optimum_s <= sim.monotonic() < optimum_s + 1
    stats = sim_client.stats.snapshot()
    assert stats.requests == {("killmail", 200): 150}
    assert stats.tokens_spent == {"killmail": 300}


def test_list_buckets_are_per_character_under_concurrency(
    sim_client: EsiClient, sim_fake: FakeEsi, sim: SimulatedClock
) -> None:
    for character in range(1, 5):
        sim_fake.set_list(character, list(range(60)))  # 20 pages of 3 each

    def read_pages(character: int) -> int:
        return sum(
            len(sim_client.fetch_killmail_list_page(character, "tok", page).items)
            for page in range(1, 21)
        )

    assert sim.run(read_pages, range(1, 5), 4) == [60] * 4
    assert sim_fake.over_limit == 0
    # 14 pages per character-window (28 of 30 tokens): page 15 waits exactly one window.
    assert 900 <= sim.monotonic() < 901


def test_420_pauses_every_thread_until_the_reset(
    sim_client: EsiClient, sim_fake: FakeEsi, sim: SimulatedClock
) -> None:
    for _ in range(3):
        sim_client.fetch_status()
    sim_fake.script(420, headers={"X-ESI-Error-Limit-Remain": "0", "X-ESI-Error-Limit-Reset": "20"})
    results = sim.run(lambda _: sim_client.fetch_status(), range(40), THREADS)
    assert len(results) == 40
    (error,) = [s for s in sim_fake.seen if s.status == 420]
    later = [s.at_s for s in sim_fake.seen if s.at_s > error.at_s]
    assert later and min(later) >= error.at_s + 20
    assert sim_client.limiter is not None
    assert sim_client.limiter.snapshot().waited_s["error_limit"] > 0
