"""Fixtures for the simulator's tests: servers on port 0, HTTP clients, OpenAPI schemas.

The OpenAPI schemas are CCP's, cut to the routes in use (``tests/data/openapi``).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from killsim import ManualClock, Scenario, SigningKeys, SimServer
from tests.refdata import openapi_2025
from tests.sim.sim_helpers import CLIENT_HEADERS, OpenApi, SimFactory


@pytest.fixture(scope="session")
def openapi() -> OpenApi:
    return OpenApi(openapi_2025())


@pytest.fixture(scope="session")
def keys() -> SigningKeys:
    """One set of signing keys for the whole session (RSA generation is slow)."""
    return SigningKeys.generate()


@pytest.fixture
def make_sim(keys: SigningKeys) -> Iterator[SimFactory]:
    """Start simulators (``make_sim(scenario, clock=...)``); all are stopped afterwards."""
    started: list[SimServer] = []

    def make(
        scenario: Scenario | str = "smoke", *, clock: ManualClock | None = None, seed: int = 1
    ) -> SimServer:
        chosen = Scenario.named(scenario, seed=seed) if isinstance(scenario, str) else scenario
        sim = SimServer(chosen, port=0, clock=clock, keys=keys).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()
    for sim in started:
        assert sim.stats.snapshot().internal_errors == 0, "the simulator hit a bug (see log)"


@pytest.fixture
def sim(make_sim: SimFactory) -> SimServer:
    """The smoke scenario on the real clock."""
    return make_sim("smoke")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """An HTTP client that behaves like killsync's (user agent, compatibility date)."""
    with httpx.Client(headers=CLIENT_HEADERS, timeout=10.0) as client:
        yield client
