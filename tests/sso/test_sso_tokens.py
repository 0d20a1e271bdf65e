"""Access-token validation: keys by kid/alg (RS256, ES256), exp, iss, aud, sub, scp."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from killcli.errors import TokenRejected
from killcli.esi import ManualClock
from killcli.sso import SsoClient, TokenClaims
from tests.sso.conftest import MakeSso
from tests.sso.sso_fakes import CHARACTER, CLIENT_ID, SCOPE, FakeSso, ec_key, rsa_key


def test_rs256_token_validates_to_claims(
    sso: SsoClient, sso_fake: FakeSso, clock: ManualClock
) -> None:
    claims = sso.validate_access_token(sso_fake.mint())
    assert claims == TokenClaims(
        character_id=CHARACTER,
        name="Pilot One",
        owner_hash="owner-hash=",
        scopes=frozenset({SCOPE}),
        client_id=CLIENT_ID,
        expires_at=datetime.fromtimestamp(int(clock.wall() + 1200), tz=UTC),
    )


def test_es256_token_validates(sso: SsoClient, sso_fake: FakeSso) -> None:
    assert sso.validate_access_token(sso_fake.mint(key=sso_fake.ec)).character_id == CHARACTER


def test_metadata_and_keys_are_fetched_once(sso: SsoClient, sso_fake: FakeSso) -> None:
    for _ in range(3):
        sso.validate_access_token(sso_fake.mint())
    assert sso_fake.calls == {"/.well-known/oauth-authorization-server": 1, "/v9/keys": 1}


def test_unknown_kid_refetches_once_then_rejects(sso: SsoClient, sso_fake: FakeSso) -> None:
    sso.validate_access_token(sso_fake.mint())
    stranger = rsa_key("unknown-kid")
    with pytest.raises(TokenRejected, match="no RS256 signing key 'unknown-kid'"):
        sso.validate_access_token(sso_fake.mint(key=stranger))
    assert sso_fake.calls["/v9/keys"] == 2


def test_rotated_key_is_picked_up_by_the_refetch(sso: SsoClient, sso_fake: FakeSso) -> None:
    sso.validate_access_token(sso_fake.mint())
    rotated = ec_key("ES-Key-2")
    sso_fake.published.append(rotated)
    assert sso.validate_access_token(sso_fake.mint(key=rotated)).character_id == CHARACTER


def test_key_must_match_the_algorithm_too(sso: SsoClient, sso_fake: FakeSso) -> None:
    impostor = ec_key(sso_fake.rsa.kid)  # an ES256 token claiming the RS256 key's kid
    with pytest.raises(TokenRejected, match="no ES256 signing key"):
        sso.validate_access_token(sso_fake.mint(key=impostor))


def test_forged_signature_is_rejected(sso: SsoClient, sso_fake: FakeSso) -> None:
    forger = rsa_key(sso_fake.rsa.kid)
    with pytest.raises(TokenRejected, match="signature does not verify"):
        sso.validate_access_token(sso_fake.mint(key=forger))


@pytest.mark.parametrize("header_alg", ["none", "HS256"])
def test_only_asymmetric_algorithms_are_accepted(sso: SsoClient, header_alg: str) -> None:
    import jwt

    key = "k" * 32 if header_alg == "HS256" else None
    token = jwt.encode({"sub": "CHARACTER:EVE:1"}, key, algorithm=header_alg)  # type: ignore[arg-type]
    with pytest.raises(TokenRejected, match="unaccepted algorithm"):
        sso.validate_access_token(token)


def test_expired_token_is_rejected_past_the_leeway(
    sso: SsoClient, sso_fake: FakeSso, clock: ManualClock
) -> None:
    token = sso_fake.mint(expires_in_s=60)
    clock.advance(60 + 29)
    sso.validate_access_token(token)  # inside the 30 s leeway
    clock.advance(2)
    with pytest.raises(TokenRejected, match="expired"):
        sso.validate_access_token(token)


@pytest.mark.parametrize("issuer", ["login.test", "https://login.test", "https://login.test/"])
def test_issuer_variants_are_accepted(sso: SsoClient, sso_fake: FakeSso, issuer: str) -> None:
    assert sso.validate_access_token(sso_fake.mint(iss=issuer)).character_id == CHARACTER


@pytest.mark.parametrize("issuer", ["login.eveonline.com", "https://evil.test", None])
def test_other_issuers_are_rejected(sso: SsoClient, sso_fake: FakeSso, issuer: str | None) -> None:
    with pytest.raises(TokenRejected, match="issuer"):
        sso.validate_access_token(sso_fake.mint(iss=issuer))


@pytest.mark.parametrize(
    "aud", [[CLIENT_ID], ["EVE Online"], "EVE Online", ["other-app", "EVE Online"], None]
)
def test_audience_needs_client_id_and_eve_online(
    sso: SsoClient, sso_fake: FakeSso, aud: object
) -> None:
    with pytest.raises(TokenRejected, match="audience"):
        sso.validate_access_token(sso_fake.mint(aud=aud))


@pytest.mark.parametrize("sub", ["CHARACTER:EVE:abc", "CORPORATION:EVE:1", None])
def test_subject_must_be_a_character(sso: SsoClient, sso_fake: FakeSso, sub: str | None) -> None:
    with pytest.raises(TokenRejected, match="subject"):
        sso.validate_access_token(sso_fake.mint(sub=sub))


@pytest.mark.parametrize(
    ("scp", "scopes"),
    [
        (None, frozenset()),
        (SCOPE, frozenset({SCOPE})),
        ([SCOPE, "publicData"], frozenset({SCOPE, "publicData"})),
    ],
)
def test_scopes_absent_string_or_list(
    sso: SsoClient, sso_fake: FakeSso, scp: object, scopes: frozenset[str]
) -> None:
    assert sso.validate_access_token(sso_fake.mint(scp=scp)).scopes == scopes


def test_issuer_of_another_sso_host_comes_from_its_metadata(
    make_sso: MakeSso, sso_fake: FakeSso
) -> None:
    sso = make_sso()
    assert sso.metadata().issuer == "https://login.test"
    with pytest.raises(TokenRejected):
        sso.validate_access_token(sso_fake.mint(iss="https://login.eveonline.com"))


def test_garbage_is_rejected_without_echoing_it(sso: SsoClient) -> None:
    with pytest.raises(TokenRejected) as caught:
        sso.validate_access_token("not-a-jwt-secret-ish")
    assert "not-a-jwt-secret-ish" not in str(caught.value)


# -- edge cases of the time claims and the subject (issue 10, finding 9) ---------------


def claims(name: str, value: object) -> dict[str, Any]:
    """One overridden claim, as ``mint``'s keyword arguments."""
    return {name: value}


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_nbf_and_iat_in_the_future_are_rejected(
    sso: SsoClient, sso_fake: FakeSso, clock: ManualClock, claim: str
) -> None:
    now = int(clock.wall())
    assert sso.validate_access_token(sso_fake.mint(**claims(claim, now + 30))).character_id
    with pytest.raises(TokenRejected, match="in the future"):
        sso.validate_access_token(sso_fake.mint(**claims(claim, now + 31)))


def test_nbf_in_the_past_is_fine(sso: SsoClient, sso_fake: FakeSso, clock: ManualClock) -> None:
    assert sso.validate_access_token(sso_fake.mint(nbf=int(clock.wall()) - 5)).character_id


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value", ["soon", True, float("nan"), float("inf"), -1, 10**400, [1], 253_402_300_800]
)
def test_time_claims_that_are_not_times_are_rejected(
    sso: SsoClient, sso_fake: FakeSso, claim: str, value: object
) -> None:
    with pytest.raises(TokenRejected, match=f"{claim} is not a valid time"):
        sso.validate_access_token(sso_fake.mint(**claims(claim, value)))


@pytest.mark.parametrize(
    "sub",
    [
        f"CHARACTER:EVE:{CHARACTER}\n",  # `$` would match before the newline
        f"CHARACTER:EVE:{CHARACTER}\r",
        f" CHARACTER:EVE:{CHARACTER}",
        "CHARACTER:EVE:١٢٣",  # Arabic-Indic digits: int() reads them as 123
        "CHARACTER:EVE:\uff11\uff12\uff13",  # fullwidth digits
        "CHARACTER:EVE:1_000",  # int() accepts underscores
        "CHARACTER:EVE:+1",
        "CHARACTER:EVE:-1",
        "CHARACTER:EVE:",
        "character:eve:1",
        "CHARACTER:EVE:1:2",
        "CHARACTER:EVE:" + "9" * 4000,
        f"CHARACTER:EVE:{2**63}",  # does not fit a BIGINT: must not be an OverflowError later
        "CHARACTER:EVE:99999999999999999999",
        "CHARACTER:EVE:0",
        12345,
        ["CHARACTER:EVE:1"],
    ],
)
def test_strict_subject(sso: SsoClient, sso_fake: FakeSso, sub: object) -> None:
    with pytest.raises(TokenRejected, match="subject"):
        sso.validate_access_token(sso_fake.mint(sub=sub))


def test_largest_bigint_character_id_is_accepted(sso: SsoClient, sso_fake: FakeSso) -> None:
    claims = sso.validate_access_token(sso_fake.mint(sub=f"CHARACTER:EVE:{2**63 - 1}"))
    assert claims.character_id == 2**63 - 1
