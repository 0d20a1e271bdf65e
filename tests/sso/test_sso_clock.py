"""Token answers in two steps (spend, then verify) and the SSO's clock from its Date header."""

from __future__ import annotations

from datetime import timedelta
from email.utils import formatdate

import pytest

from killcli.errors import SsoError, TokenRejected
from killcli.esi import ManualClock
from killcli.sso import SsoClient
from killcli.sso.client import MAX_CLOCK_OFFSET_S
from tests.sso.sso_fakes import CHARACTER, FakeSso

HOST_AHEAD_S = 25 * 60  # the host: its clock 25 minutes ahead of the SSO's


def test_request_refresh_hands_back_the_rotated_token_before_verifying(
    sso: SsoClient, sso_fake: FakeSso
) -> None:
    sso_fake.jwks_status = 503
    issued = sso.request_refresh("refresh-1")  # the key set is not needed to spend a token
    assert issued.refresh_token == "refresh-2"
    assert issued.access_token is not None
    assert "refresh-2" not in repr(issued) and issued.access_token not in repr(issued)
    with pytest.raises(SsoError, match="signing keys failed after") as caught:
        sso.verify(issued)
    assert not isinstance(caught.value, TokenRejected)  # retryable, not "log in again"
    sso_fake.jwks_status = None
    assert sso.verify(issued).claims.character_id == CHARACTER


def test_refresh_fetches_the_keys_before_spending_the_token(
    sso: SsoClient, sso_fake: FakeSso
) -> None:
    sso_fake.jwks_status = 503
    with pytest.raises(SsoError, match="signing keys"):
        sso.refresh("refresh-1")
    assert sso_fake.token_requests == []  # refresh-1 was not rotated into the void
    sso_fake.jwks_status = None
    assert sso.refresh("refresh-1").refresh_token == "refresh-2"


def test_an_answer_without_access_token_still_hands_back_the_refresh_token(
    sso: SsoClient, sso_fake: FakeSso
) -> None:
    sso_fake.send_access_token = False
    issued = sso.request_refresh("refresh-1")
    assert issued.access_token is None and issued.refresh_token == "refresh-2"
    with pytest.raises(SsoError, match="no access token"):
        sso.verify(issued)


def test_date_header_corrects_a_host_clock_25_minutes_ahead(
    sso: SsoClient, sso_fake: FakeSso, clock: ManualClock
) -> None:
    sso_fake.skew_s, sso_fake.send_date = -HOST_AHEAD_S, True
    tokens = sso.refresh("refresh-1")  # exp is 5 minutes in this host's past
    offset = sso.sso_clock_offset_s
    assert offset is not None and abs(offset + HOST_AHEAD_S) <= 1
    host_now = clock.now()
    # on this host's clock, the token lasts its 20 minutes
    assert host_now + timedelta(seconds=1190) <= tokens.expires_at
    assert tokens.expires_at <= host_now + timedelta(seconds=1200)
    assert sso.clock_note() == (
        "this host's clock is 1500 s ahead of the EVE SSO's (its Date "
        "header); token times were checked on the SSO's clock"
    )


def test_date_header_corrects_a_host_clock_behind(sso: SsoClient, sso_fake: FakeSso) -> None:
    sso_fake.skew_s, sso_fake.send_date = HOST_AHEAD_S, True  # iat 25 minutes in the future
    assert sso.refresh("refresh-1").claims.character_id == CHARACTER
    assert "behind the EVE SSO's" in (sso.clock_note() or "")


def test_without_a_date_header_a_skewed_token_is_rejected(
    sso: SsoClient, sso_fake: FakeSso
) -> None:
    sso_fake.skew_s = -HOST_AHEAD_S
    issued = sso.request_refresh("refresh-1")
    with pytest.raises(TokenRejected, match="expired"):
        sso.verify(issued)
    assert sso.sso_clock_offset_s is None and sso.clock_note() is None


def test_an_implausible_offset_is_not_believed_and_named(sso: SsoClient, sso_fake: FakeSso) -> None:
    sso_fake.skew_s, sso_fake.send_date = -(MAX_CLOCK_OFFSET_S + 600), True
    issued = sso.request_refresh("refresh-1")
    with pytest.raises(
        TokenRejected,
        match=r"expired .*4200 s ahead of the EVE SSO's .*"
        r"fix the host clock \(NTP\)",
    ):
        sso.verify(issued)


def test_a_small_offset_is_corrected_silently(sso: SsoClient, sso_fake: FakeSso) -> None:
    sso_fake.skew_s, sso_fake.send_date = -20, True
    sso.refresh("refresh-1")
    assert sso.clock_note() is None  # inside the leeway: nothing worth telling


@pytest.mark.parametrize(
    "date",
    ["", "yesterday", "Mon, 99 Foo 2026 25:61:61 GMT", "\x00", "Tue, 01 Dec 2026 11:00:00 +9999"],
)
def test_unreadable_date_headers_are_ignored(
    make_sso: object, sso_fake: FakeSso, date: str
) -> None:
    import httpx

    def answer(request: httpx.Request) -> httpx.Response:
        response = sso_fake(request)
        response.headers["Date"] = date
        return response

    sso = SsoClient(
        "https://sso.test",
        "app-123",
        sso_fake.secret,
        transport=httpx.MockTransport(answer),
        clock=sso_fake.clock,
    )
    with sso:
        assert sso.refresh("refresh-1").claims.character_id == CHARACTER
        assert sso.sso_clock_offset_s is None


@pytest.mark.parametrize(
    ("age", "offset_s"),
    [("300", 0.0), (None, -300.0), ("x", None), ("9" * 5000, None), ("-1", None)],
)
def test_a_cached_answer_is_aged_back(
    sso_fake: FakeSso, age: str | None, offset_s: float | None
) -> None:
    import httpx

    def cached(request: httpx.Request) -> httpx.Response:
        response = sso_fake(request)  # as a CDN would serve a copy made 300 s ago
        response.headers["Date"] = formatdate(sso_fake.wall() - 300, usegmt=True)
        if age is not None:
            response.headers["Age"] = age
        return response

    sso = SsoClient(
        "https://sso.test",
        "app-123",
        sso_fake.secret,
        transport=httpx.MockTransport(cached),
        clock=sso_fake.clock,
    )
    with sso:
        sso.metadata()
        assert sso.sso_clock_offset_s == offset_s


@pytest.mark.parametrize(
    "expires_in", [float("nan"), float("inf"), -5, 0, True, "1199", 10**30, None]
)
def test_unusable_expires_in_is_ignored(
    sso: SsoClient, sso_fake: FakeSso, clock: ManualClock, expires_in: object
) -> None:
    sso_fake.expires_in = expires_in
    tokens = sso.refresh("refresh-1")
    assert tokens.expires_at == tokens.claims.expires_at  # the token's exp decides
    assert tokens.expires_at > clock.now()


def test_expires_in_caps_the_expiry(sso: SsoClient, sso_fake: FakeSso, clock: ManualClock) -> None:
    sso_fake.expires_in = 60
    tokens = sso.refresh("refresh-1")
    assert tokens.expires_at == clock.now() + timedelta(seconds=60)
