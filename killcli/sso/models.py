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
class TokenSet:
    """An access token, the refresh token to store (possibly rotated) and their claims."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    claims: TokenClaims

    def expires_within(self, seconds: float, now: datetime) -> bool:
        """True when the access token is gone or will be within ``seconds`` of ``now``."""
        return self.expires_at - timedelta(seconds=seconds) <= now
