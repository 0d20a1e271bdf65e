"""Validating EVE SSO access tokens (JWTs) against a JWKS key, without any I/O.

PyJWT checks the signature; every claim is checked here against the injected clock
(the caller passes the SSO's clock when it knows it): ``exp``, ``nbf`` and ``iat`` (each
with a small leeway; ``nbf`` and ``iat`` only when present), ``iss`` (with or without
scheme and trailing slash), ``aud`` (must hold both the client id and ``"EVE Online"``),
``sub`` (exactly ``CHARACTER:EVE:<ASCII digits>``, an id that fits a signed 64-bit
integer) and ``scp`` (absent, a string or a list). Failures raise ``TokenRejected`` with a
message that names the check, never the token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import jwt

from killcli.errors import TokenRejected
from killcli.sso.models import TokenClaims

ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256"})
EVE_AUDIENCE = "EVE Online"
# [0-9], not \d (which matches Arabic-Indic and other digits), and fullmatch, not `$`
# (which also matches before a trailing newline).
_SUBJECT = re.compile(r"CHARACTER:EVE:([0-9]{1,19})")
MAX_CHARACTER_ID = 2**63 - 1  # ids are stored as BIGINT
MAX_TIMESTAMP_S = 253_402_300_799  # 9999-12-31T23:59:59Z, the last instant datetime holds

Jwk = Mapping[str, Any]


def read_header(token: str) -> tuple[str | None, str]:
    """The ``(kid, alg)`` of a token's header; only RS256 and ES256 are acceptable."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRejected("access token is not a readable JWT") from exc
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise TokenRejected(f"access token uses an unaccepted algorithm {alg!r}")
    kid = header.get("kid")
    return (kid if isinstance(kid, str) else None), str(alg)


def select_key(keys: Sequence[Jwk], kid: str | None, alg: str) -> Jwk | None:
    """The JWKS entry for ``kid`` whose declared algorithm (if any) is ``alg``."""
    for key in keys:
        if key.get("kid") == kid and key.get("alg", alg) == alg:
            return key
    return None


def normalize_issuer(value: str) -> str:
    """``https://login.eveonline.com/`` -> ``login.eveonline.com`` (what EVE varies on)."""
    text = value.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    return text.rstrip("/").lower()


def validate(
    token: str, key: Jwk, alg: str, *, issuer: str, client_id: str, now: datetime, leeway_s: float
) -> TokenClaims:
    """Check signature and claims of ``token`` with ``key``; return its claims."""
    claims = _decode(token, key, alg)
    expires_at = _check_exp(claims, now, leeway_s)
    _check_not_in_future(claims, "nbf", "is not valid before", now, leeway_s)
    _check_not_in_future(claims, "iat", "was issued at", now, leeway_s)
    _check_issuer(claims, issuer)
    _check_audience(claims, client_id)
    name, owner = claims.get("name"), claims.get("owner")
    if not isinstance(name, str) or not isinstance(owner, str):
        raise TokenRejected("access token lacks the character name or owner hash")
    azp = claims.get("azp")
    return TokenClaims(
        character_id=_character_id(claims),
        name=name,
        owner_hash=owner,
        scopes=_scopes(claims),
        expires_at=expires_at,
        client_id=azp if isinstance(azp, str) else client_id,
    )


def _decode(token: str, key: Jwk, alg: str) -> dict[str, Any]:
    try:
        public_key = jwt.PyJWK(dict(key), algorithm=alg)
        return jwt.decode(
            token,
            public_key,
            algorithms=[alg],
            options={
                "verify_signature": True,
                "verify_exp": False,  # checked below against the injected clock
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,  # EVE's aud must hold two values; PyJWT accepts any one
                "verify_iss": False,  # EVE varies the scheme and trailing slash
                "verify_sub": False,  # checked below, with a clearer message
            },
        )
    except jwt.PyJWTError as exc:
        reason = type(exc).__name__
        raise TokenRejected(f"access token signature does not verify ({reason})") from exc


def _check_exp(claims: Mapping[str, Any], now: datetime, leeway_s: float) -> datetime:
    exp = _timestamp(claims, "exp")
    if exp is None:
        raise TokenRejected("access token has no expiry")
    expires_at = datetime.fromtimestamp(exp, tz=UTC)
    if now.timestamp() > exp + leeway_s:
        raise TokenRejected(f"access token expired at {expires_at.isoformat()}")
    return expires_at


def _check_not_in_future(
    claims: Mapping[str, Any], name: str, what: str, now: datetime, leeway_s: float
) -> None:
    """An optional time claim (``nbf``, ``iat``) must not be ahead of ``now`` + leeway."""
    value = _timestamp(claims, name)
    if value is not None and value > now.timestamp() + leeway_s:
        when = datetime.fromtimestamp(value, tz=UTC).isoformat()
        raise TokenRejected(f"access token {what} {when}, in the future")


def _timestamp(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim in seconds, None when absent; anything else is rejected."""
    if name not in claims:
        return None
    value = claims[name]
    # The range test also refuses NaN, infinities and integers too large for a float.
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0 <= value <= MAX_TIMESTAMP_S
    ):
        raise TokenRejected(f"access token {name} is not a valid time")
    return float(value)


def _check_issuer(claims: Mapping[str, Any], issuer: str) -> None:
    iss = claims.get("iss")
    if not isinstance(iss, str) or normalize_issuer(iss) != normalize_issuer(issuer):
        raise TokenRejected(f"access token issuer {iss!r} is not {issuer!r}")


def _check_audience(claims: Mapping[str, Any], client_id: str) -> None:
    aud = claims.get("aud")
    audiences = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
    missing = {client_id, EVE_AUDIENCE} - audiences
    if missing:
        raise TokenRejected(f"access token audience lacks {sorted(missing)!r}")


def _character_id(claims: Mapping[str, Any]) -> int:
    sub = claims.get("sub")
    match = _SUBJECT.fullmatch(sub) if isinstance(sub, str) else None
    if match is None:
        raise TokenRejected("access token subject is not CHARACTER:EVE:<id>")
    character_id = int(match.group(1))
    if not 0 < character_id <= MAX_CHARACTER_ID:
        raise TokenRejected("access token subject's character id is out of range")
    return character_id


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scp = claims.get("scp")
    if scp is None:
        return frozenset()
    if isinstance(scp, str):
        return frozenset({scp})
    if isinstance(scp, list) and all(isinstance(s, str) for s in scp):
        return frozenset(scp)
    raise TokenRejected("access token scopes are neither a string nor a list")
