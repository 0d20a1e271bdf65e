"""EVE SSO: metadata, JWKS, refresh, rotation, revocation, PKCE codes, client auth, JWTs."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from killsim import (
    CORPORATION_SCOPES,
    ES256_KID,
    READ_CORP_KILLMAILS,
    READ_KILLMAILS,
    RS256_KID,
    ManualClock,
    Scenario,
    SimServer,
)
from tests.sim.sim_helpers import SimFactory, bearer, list_url

CALLBACK = "http://127.0.0.1:8765/callback"


def _token(
    sim: SimServer, http: httpx.Client, data: dict[str, str], *, basic: bool = True
) -> httpx.Response:
    url = f"{sim.sso_url}/v2/oauth/token"
    if not basic:
        return http.post(url, data=data)
    return http.post(url, data=data, auth=(sim.client_id, sim.client_secret or ""))


def _refresh(sim: SimServer, http: httpx.Client, token: str, **kw: Any) -> httpx.Response:
    return _token(sim, http, {"grant_type": "refresh_token", "refresh_token": token}, **kw)


def _claims(sim: SimServer, http: httpx.Client, access_token: str) -> dict[str, Any]:
    """Validate like a careful client: JWKS key by kid, exp, iss, aud."""
    meta = http.get(f"{sim.sso_url}/.well-known/oauth-authorization-server").json()
    jwks = jwt.PyJWKSet.from_dict(http.get(meta["jwks_uri"]).json())
    kid = jwt.get_unverified_header(access_token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        access_token,
        key.key,
        algorithms=[key.algorithm_name],
        audience="EVE Online",
        issuer=meta["issuer"],
    )
    return claims


def test_metadata_and_jwks(sim: SimServer, http: httpx.Client) -> None:
    meta = http.get(f"{sim.sso_url}/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == sim.sso_url
    assert meta["token_endpoint"] == f"{sim.sso_url}/v2/oauth/token"
    assert meta["authorization_endpoint"] == f"{sim.sso_url}/v2/oauth/authorize"
    assert meta["revocation_endpoint"] == f"{sim.sso_url}/v2/oauth/revoke"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    keys = http.get(meta["jwks_uri"]).json()["keys"]
    assert {(k["kid"], k["alg"], k["kty"]) for k in keys} == {
        (RS256_KID, "RS256", "RSA"),
        (ES256_KID, "ES256", "EC"),
    }


def test_refresh_returns_eve_claims(sim: SimServer, http: httpx.Client) -> None:
    char = sim.world.characters[0]
    response = _refresh(sim, http, sim.issue_refresh_token(char.character_id))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type", "refresh_token"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 1200)
    assert jwt.get_unverified_header(body["access_token"])["kid"] == RS256_KID
    claims = _claims(sim, http, body["access_token"])
    assert claims["sub"] == f"CHARACTER:EVE:{char.character_id}"
    assert claims["name"] == char.name == "[b]Boss[/b]"
    assert claims["owner"] == sim.owner_hash(char.character_id)
    assert claims["aud"] == [sim.client_id, "EVE Online"]
    assert claims["azp"] == sim.client_id
    assert claims["scp"] == READ_KILLMAILS  # one scope: a string
    assert claims["exp"] - claims["iat"] == 1200
    assert claims["jti"]


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ([READ_KILLMAILS, READ_CORP_KILLMAILS], [READ_KILLMAILS, READ_CORP_KILLMAILS]),
        ([READ_KILLMAILS, *CORPORATION_SCOPES], [READ_KILLMAILS, *CORPORATION_SCOPES]),
        ([], None),
    ],
)
def test_scope_claim_shapes(
    sim: SimServer, http: httpx.Client, scopes: list[str], expected: list[str] | None
) -> None:
    refresh = sim.issue_refresh_token(sim.world.character_ids[0], scopes=scopes)
    claims = _claims(sim, http, _refresh(sim, http, refresh).json()["access_token"])
    assert claims.get("scp") == expected


def test_refresh_tokens_rotate(sim: SimServer, http: httpx.Client) -> None:
    old = sim.issue_refresh_token(sim.world.character_ids[0])
    new = _refresh(sim, http, old).json()["refresh_token"]
    assert new != old
    stale = _refresh(sim, http, old)
    assert stale.status_code == 400
    assert stale.json()["error"] == "invalid_grant"
    assert "error_description" in stale.json()
    assert _refresh(sim, http, new).status_code == 200


def test_rotation_can_be_turned_off(make_sim: SimFactory, http: httpx.Client) -> None:
    sim = make_sim(
        replace(Scenario.named("smoke"), rotate_refresh_tokens=False, access_token_lifetime_s=60)
    )
    token = sim.issue_refresh_token(sim.world.character_ids[0])
    for _ in range(2):
        body = _refresh(sim, http, token).json()
        assert (body["refresh_token"], body["expires_in"]) == (token, 60)


def test_revocation(sim: SimServer, http: httpx.Client) -> None:
    first, second = sim.world.character_ids[:2]
    token = sim.issue_refresh_token(first)
    assert sim.revoke(first) == 1
    assert _refresh(sim, http, token).json()["error"] == "invalid_grant"
    other = sim.issue_refresh_token(second)
    revoked = http.post(
        f"{sim.sso_url}/v2/oauth/revoke",
        auth=(sim.client_id, sim.client_secret or ""),
        data={"token": other, "token_type_hint": "refresh_token"},
    )
    assert revoked.status_code == 200
    assert _refresh(sim, http, other).status_code == 400


def test_client_authentication(sim: SimServer, http: httpx.Client) -> None:
    token = sim.issue_refresh_token(sim.world.character_ids[0])
    form = {"grant_type": "refresh_token", "refresh_token": token}
    url = f"{sim.sso_url}/v2/oauth/token"
    for auth in ((sim.client_id, "wrong"), ("someone-else", sim.client_secret or "")):
        refused = http.post(url, data=form, auth=auth)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
    no_secret = http.post(url, data={**form, "client_id": sim.client_id})
    assert no_secret.status_code == 401
    in_body = http.post(
        url, data={**form, "client_id": sim.client_id, "client_secret": sim.client_secret or ""}
    )
    assert in_body.status_code == 401
    as_json = http.post(url, json=form, auth=(sim.client_id, sim.client_secret or ""))
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    assert _refresh(sim, http, token).status_code == 200  # the token survived all that


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def _authorize(
    sim: SimServer, http: httpx.Client, challenge: str | None, **extra: str
) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": sim.client_id,
        "redirect_uri": CALLBACK,
        "scope": READ_KILLMAILS,
        "state": "st-1",
        **extra,
    }
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    response = http.get(f"{sim.sso_url}/v2/oauth/authorize", params=params)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(params["redirect_uri"] + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def pkce_sim(make_sim: SimFactory, clock: ManualClock) -> SimServer:
    return make_sim(replace(Scenario.named("smoke"), client_kind="pkce"), clock=clock)


def test_pkce_login_flow(pkce_sim: SimServer, http: httpx.Client) -> None:
    sim = pkce_sim
    assert sim.client_secret is None
    login = sim.world.character_ids[2]
    sim.set_login_character(login)
    verifier, challenge = _pkce()
    answer = _authorize(sim, http, challenge)
    assert answer["state"] == "st-1"
    form = {
        "grant_type": "authorization_code",
        "code": answer["code"],
        "client_id": sim.client_id,
        "code_verifier": verifier,
    }
    tokens = _token(sim, http, form, basic=False)
    assert tokens.status_code == 200
    claims = _claims(sim, http, tokens.json()["access_token"])
    assert claims["sub"] == f"CHARACTER:EVE:{login}"
    again = _token(sim, http, form, basic=False)  # codes are single use
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    refreshed = _token(
        sim,
        http,
        {
            "grant_type": "refresh_token",
            "client_id": sim.client_id,
            "refresh_token": tokens.json()["refresh_token"],
        },
        basic=False,
    )
    assert refreshed.status_code == 200


@pytest.mark.parametrize("problem", ["verifier", "no-verifier", "client", "redirect", "expired"])
def test_pkce_code_checks(
    pkce_sim: SimServer, clock: ManualClock, http: httpx.Client, problem: str
) -> None:
    verifier, challenge = _pkce()
    code = _authorize(pkce_sim, http, challenge)["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": pkce_sim.client_id,
        "code_verifier": verifier,
    }
    if problem == "verifier":
        form["code_verifier"] = _pkce()[0]
    elif problem == "no-verifier":
        del form["code_verifier"]
    elif problem == "client":
        form["client_id"] = "someone-else"
    elif problem == "redirect":
        form["redirect_uri"] = "http://127.0.0.1:9999/elsewhere"
    else:
        clock.advance(300)
    response = _token(pkce_sim, http, form, basic=False)
    expected = (401, "invalid_client") if problem == "client" else (400, "invalid_grant")
    assert (response.status_code, response.json()["error"]) == expected
    if problem != "expired":  # a failed attempt does not burn a code that is still valid
        form |= {"code_verifier": verifier, "client_id": pkce_sim.client_id}
        form.pop("redirect_uri", None)
        assert _token(pkce_sim, http, form, basic=False).status_code == 200


def test_code_is_good_for_just_under_five_minutes(
    pkce_sim: SimServer, clock: ManualClock, http: httpx.Client
) -> None:
    verifier, challenge = _pkce()
    code = _authorize(pkce_sim, http, challenge)["code"]
    clock.advance(299)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": pkce_sim.client_id,
        "code_verifier": verifier,
        "redirect_uri": CALLBACK,
    }
    assert _token(pkce_sim, http, form, basic=False).status_code == 200


def test_authorize_errors(pkce_sim: SimServer, http: httpx.Client) -> None:
    assert _authorize(pkce_sim, http, None)["error"] == "invalid_request"  # PKCE app: required
    _, challenge = _pkce()
    assert (
        _authorize(pkce_sim, http, challenge, scope="esi-wallet.read_character_wallet.v1")["error"]
        == "invalid_scope"
    )
    pkce_sim.set_login_character(None)
    denied = _authorize(pkce_sim, http, challenge)
    assert (denied["error"], denied["state"]) == ("access_denied", "st-1")
    bad_redirect = http.get(
        f"{pkce_sim.sso_url}/v2/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": pkce_sim.client_id,
            "state": "s",
            "redirect_uri": "https://evil.example/cb",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert bad_redirect.status_code == 400
    assert "Location" not in bad_redirect.headers


def test_confidential_app_code_flow_uses_basic(sim: SimServer, http: httpx.Client) -> None:
    code = _authorize(sim, http, None)["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    assert _token(sim, http, form).status_code == 200


def test_es256_tokens_are_chosen_by_kid(make_sim: SimFactory, http: httpx.Client) -> None:
    sim = make_sim(replace(Scenario.named("smoke"), signing="alternate"))
    char = sim.world.character_ids[0]
    token = sim.issue_refresh_token(char)
    kids = []
    for _ in range(4):
        body = _refresh(sim, http, token).json()
        token = body["refresh_token"]
        kids.append(jwt.get_unverified_header(body["access_token"])["kid"])
        assert _claims(sim, http, body["access_token"])["sub"].endswith(str(char))
        listed = http.get(list_url(sim, char), headers=bearer(body["access_token"]))
        assert listed.status_code == 200
    assert set(kids) == {RS256_KID, ES256_KID}


def test_sold_character_gets_a_new_owner_hash(sim: SimServer, http: httpx.Client) -> None:
    char = sim.world.character_ids[1]
    token = sim.issue_refresh_token(char)
    before = _refresh(sim, http, token).json()
    new_owner = sim.sell_character(char)
    after = _refresh(sim, http, before["refresh_token"]).json()
    assert _claims(sim, http, before["access_token"])["owner"] != new_owner
    assert _claims(sim, http, after["access_token"])["owner"] == new_owner
    sim.sell_character(char, revoke=True)
    assert _refresh(sim, http, after["refresh_token"]).status_code == 400


def test_sso_outage_on_demand(sim: SimServer, http: httpx.Client) -> None:
    token = sim.issue_refresh_token(sim.world.character_ids[0])
    sim.faults.fail_sso(status=503, times=1)
    assert _refresh(sim, http, token).status_code == 503
    assert _refresh(sim, http, token).status_code == 200  # the token was not consumed
    assert sim.stats.snapshot().count("/sso/v2/oauth/token") == 2


def test_a_login_may_ask_for_the_corporation_scopes(
    pkce_sim: SimServer, http: httpx.Client
) -> None:
    verifier, challenge = _pkce()
    scope = " ".join([READ_KILLMAILS, *CORPORATION_SCOPES])
    answer = _authorize(pkce_sim, http, challenge, scope=scope)
    form = {
        "grant_type": "authorization_code",
        "code": answer["code"],
        "client_id": pkce_sim.client_id,
        "code_verifier": verifier,
    }
    tokens = _token(pkce_sim, http, form, basic=False)
    claims = _claims(pkce_sim, http, tokens.json()["access_token"])
    assert claims["scp"] == [READ_KILLMAILS, *CORPORATION_SCOPES]
