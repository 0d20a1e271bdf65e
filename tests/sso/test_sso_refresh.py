"""Refresh, code exchange and revocation at the endpoints the metadata names."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import parse_qs

import httpx
import pytest

from killcli.errors import NeedsLogin, SsoError
from killcli.esi import ManualClock
from killcli.sso import SsoClient
from tests.sso.conftest import MakeSso
from tests.sso.sso_fakes import CHARACTER, CLIENT_ID, SECRET, FakeSso


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def test_refresh_with_secret_uses_http_basic_and_a_form_body(
    sso: SsoClient, sso_fake: FakeSso
) -> None:
    tokens = sso.refresh("refresh-1")
    (request,) = sso_fake.token_requests
    assert request.url == "https://sso.test/v9/token"  # from the metadata, not hard-coded
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {basic}"
    assert form_of(request) == {"grant_type": "refresh_token", "refresh_token": "refresh-1"}
    assert tokens.claims.character_id == CHARACTER


def test_refresh_without_secret_sends_client_id_in_the_body(
    make_sso: MakeSso, sso_fake: FakeSso
) -> None:
    sso = make_sso(secret=None)
    assert sso.is_pkce_app
    sso.refresh("refresh-1")
    (request,) = sso_fake.token_requests
    assert "authorization" not in request.headers
    assert form_of(request)["client_id"] == CLIENT_ID


def test_refresh_returns_the_rotated_refresh_token(
    sso: SsoClient, sso_fake: FakeSso, clock: ManualClock
) -> None:
    tokens = sso.refresh("refresh-1")
    assert tokens.refresh_token == "refresh-2"
    assert sso.refresh(tokens.refresh_token).refresh_token == "refresh-3"
    assert tokens.expires_at == clock.now() + timedelta(seconds=1199)


def test_refresh_keeps_the_old_token_when_none_is_returned(
    make_sso: MakeSso, sso_fake: FakeSso
) -> None:
    sso_fake.rotate = False
    assert make_sso().refresh("refresh-1").refresh_token == "refresh-1"


def test_invalid_grant_means_needs_login_and_is_not_retried(
    sso: SsoClient, sso_fake: FakeSso
) -> None:
    with pytest.raises(NeedsLogin) as caught:
        sso.refresh("refresh-dead-0123456789")
    assert caught.value.reason == "invalid_grant"
    assert len(sso_fake.token_requests) == 1
    assert "refresh-dead-0123456789" not in str(caught.value)  # the fake echoes it; we do not


def test_invalid_client_is_a_clear_sso_error(make_sso: MakeSso, sso_fake: FakeSso) -> None:
    sso = make_sso()
    sso_fake.secret = "another-secret"
    with pytest.raises(SsoError) as caught:
        sso.refresh("refresh-1")
    assert not isinstance(caught.value, NeedsLogin)
    assert "invalid_client" in str(caught.value)
    assert "KILLSYNC_CLIENT_SECRET" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_5xx_is_retried_then_gives_up(
    sso: SsoClient, sso_fake: FakeSso, clock: ManualClock
) -> None:
    sso.validate_access_token(sso_fake.mint())  # metadata and keys cached: the token POST fails
    sso_fake.scripted.extend([502, 503, 504])
    with pytest.raises(SsoError, match="token refresh failed after 3 attempts: HTTP 504"):
        sso.refresh("refresh-1")
    assert len(clock.sleeps) == 2
    sso_fake.scripted.extend([503])
    assert sso.refresh("refresh-1").refresh_token == "refresh-2"


def test_timeouts_are_retried(make_sso: MakeSso, sso_fake: FakeSso) -> None:
    failures = [httpx.ConnectTimeout("slow")]

    def flaky(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop()
        return sso_fake(request)

    sso = SsoClient(
        "https://sso.test",
        CLIENT_ID,
        SECRET,
        transport=httpx.MockTransport(flaky),
        clock=sso_fake.clock,
    )
    with sso:
        assert sso.refresh("refresh-1").claims.character_id == CHARACTER


def test_exchange_code_with_pkce_verifier(make_sso: MakeSso, sso_fake: FakeSso) -> None:
    from killcli.sso import make_pkce

    sso = make_sso(secret=None)
    verifier, challenge = make_pkce()
    sso_fake.grant_code("code-1", challenge, "http://127.0.0.1:8765/callback")
    tokens = sso.exchange_code("code-1", verifier, "http://127.0.0.1:8765/callback")
    assert tokens.claims.name == "Pilot One"
    form = form_of(sso_fake.token_requests[0])
    assert form["grant_type"] == "authorization_code"
    assert form["code_verifier"] == verifier
    sso_fake.grant_code("code-2", challenge, "http://127.0.0.1:8765/callback")
    with pytest.raises(SsoError, match="PKCE verification failed") as caught:
        sso.exchange_code("code-2", "wrong-verifier", "http://127.0.0.1:8765/callback")
    assert not isinstance(caught.value, NeedsLogin)


def test_revoke(sso: SsoClient, sso_fake: FakeSso) -> None:
    sso.revoke("refresh-1")
    assert sso_fake.revoked == ["refresh-1"]
    with pytest.raises(NeedsLogin):
        sso.refresh("refresh-1")


def test_token_set_repr_hides_tokens(sso: SsoClient) -> None:
    tokens = sso.refresh("refresh-1")
    assert tokens.access_token not in repr(tokens)
    assert "refresh-2" not in repr(tokens)
    assert SECRET not in repr(sso)


def test_metadata_without_required_endpoints_is_an_sso_error(
    make_sso: MakeSso, sso_fake: FakeSso
) -> None:
    sso_fake.metadata = lambda: {"issuer": "https://login.test"}  # type: ignore[method-assign]
    with pytest.raises(SsoError, match="lacks authorization_endpoint"):
        make_sso().metadata()
