"""Fixtures of the ESI client tests: a manual clock, the fake ESI, client factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from killcli.esi import EsiClient, ManualClock, RateLimiter, RetryPolicy
from tests.esi.esi_fakes import FakeEsi

BASE_URL = "https://esi.test"
UA = "killsync/test (ops@example.org)"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakeEsi:
    return FakeEsi(clock)


@pytest.fixture
def limiter(clock: ManualClock) -> RateLimiter:
    return RateLimiter(clock=clock)


MakeClient = Callable[..., EsiClient]


@pytest.fixture
def make_client(clock: ManualClock, fake: FakeEsi, limiter: RateLimiter) -> Iterator[MakeClient]:
    """Build clients on the fake; every one is closed after the test."""
    clients: list[EsiClient] = []

    def build(**overrides: Any) -> EsiClient:
        options: dict[str, Any] = {
            "user_agent": UA,
            "transport": httpx.MockTransport(fake),
            "limiter": limiter,
            "clock": clock,
            "rand": lambda: 0.5,
            "retry_policy": RetryPolicy(max_attempts=4, backoff_initial_s=1.0),
        }
        options.update(overrides)
        client = EsiClient(BASE_URL, **options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: MakeClient) -> EsiClient:
    return make_client()
