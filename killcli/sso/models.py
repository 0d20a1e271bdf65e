"""Value objects of the SSO layer. Tokens are kept out of every ``repr``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ServerMetadata:
    """The endpoints EVE SSO announces at ``/.well-known/oauth-authorization-server``."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    revocation_endpoint: str | None


@dataclass(frozen=True)
class TokenClaims:
    """What a validated access token says about its character."""

    character_id: int
    name: str
    owner_hash: str
    scopes: frozenset[str]
    expires_at: datetime
    client_id: str


@dataclass(frozen=True)
class IssuedTokens:
    """What the token endpoint answered, before the access token is verified.

    Store ``refresh_token`` at once: the SSO may have rotated it, and the old one is dead.
    ``access_token`` is None when the answer had none (the refresh token is still worth
    keeping). ``requested_at`` is this host's clock when the request went out
    (``expires_in_s`` counts from no earlier); ``sso_clock_offset_s`` is how far the SSO's
    clock (the answer's ``Date`` header) is ahead of this host's, None when unknown.
    """

    access_token: str | None = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in_s: float | None
    requested_at: datetime
    sso_clock_offset_s: float | None = None


@dataclass(frozen=True)
class TokenSet:
    """An access token, the refresh token to store (possibly rotated) and their claims.

    ``expires_at`` is on this host's clock: the token's ``exp`` corrected by how far the
    SSO's clock is off this host's, and never later than ``expires_in`` allows.
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    claims: TokenClaims

    def expires_within(self, seconds: float, now: datetime) -> bool:
        """True when the access token is gone or will be within ``seconds`` of ``now``."""
        return self.expires_at - timedelta(seconds=seconds) <= now
