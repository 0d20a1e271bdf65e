"""Fixtures of the SSO tests: a manual clock, the fake SSO and client factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from killcli.esi import ManualClock
from killcli.sso import SsoClient
from tests.sso.sso_fakes import BASE, CLIENT_ID, SECRET, FakeSso


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sso_fake(clock: ManualClock) -> FakeSso:
    return FakeSso(clock)


MakeSso = Callable[..., SsoClient]


@pytest.fixture
def make_sso(clock: ManualClock, sso_fake: FakeSso) -> Iterator[MakeSso]:
    clients: list[SsoClient] = []

    def build(*, secret: str | None = SECRET, base: str = BASE, **options: Any) -> SsoClient:
        sso_fake.secret = secret
        client = SsoClient(
            base,
            CLIENT_ID,
            secret,
            transport=httpx.MockTransport(sso_fake),
            clock=clock,
            **options,
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def sso(make_sso: MakeSso) -> SsoClient:
    return make_sso()
