"""EVE SSO's memory: the registered application, refresh tokens, codes, owner hashes.

Access tokens are JWTs with EVE's claims; refresh tokens and codes are opaque strings.
Refresh tokens rotate by default (the old one is dead once a new one is handed out).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from killsim.clock import Clock
from killsim.keys import ES256_KID, RS256_KID, SigningKeys
from killsim.scenario import Scenario

CODE_LIFETIME_S = 300
EVE_AUDIENCE = "EVE Online"


class OAuthError(Exception):
    """An OAuth error answer: ``{"error": code, "error_description": ...}``."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status


@dataclass(frozen=True)
class Grant:
    """What a refresh token stands for."""

    character_id: int
    client_id: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class AuthCode:
    """An authorization code waiting to be exchanged."""

    grant: Grant
    redirect_uri: str
    code_challenge: str | None
    expires_at_s: float


@dataclass(frozen=True)
class TokenSet:
    """The token endpoint's answer."""

    access_token: str
    expires_in: int
    refresh_token: str

    def to_json(self) -> dict[str, Any]:
        """The token endpoint's JSON answer."""
        return {
            "access_token": self.access_token,
            "expires_in": self.expires_in,
            "token_type": "Bearer",
            "refresh_token": self.refresh_token,
        }


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier (base64url of SHA-256, no padding)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class SsoState:
    """Everything the SSO remembers between requests (thread-safe)."""

    def __init__(
        self,
        scenario: Scenario,
        names: dict[int, str],
        keys: SigningKeys,
        clock: Clock,
        issuer: str,
    ) -> None:
        self.scenario = scenario
        self.issuer = issuer
        self._names = names
        self._keys = keys
        self._clock = clock
        self._lock = threading.Lock()
        seed_hash = hashlib.sha256(f"client:{scenario.seed}".encode()).hexdigest()
        self.client_id = scenario.client_id or seed_hash[:32]
        self.client_secret: str | None = None
        if scenario.client_kind == "confidential":
            self.client_secret = scenario.client_secret or f"sim-{seed_hash[32:]}"
        self._refresh: dict[str, Grant] = {}
        self._codes: dict[str, AuthCode] = {}
        self._owner_generation: dict[int, int] = dict.fromkeys(names, 0)
        self._signed = 0
        ids = list(names)
        self.login_character: int | None = ids[scenario.login_character_index] if ids else None

    # -- characters -------------------------------------------------------------------

    def owner_hash(self, character_id: int) -> str:
        """The character's current owner hash (changes when it is sold)."""
        generation = self._owner_generation.get(character_id, 0)
        digest = hashlib.sha1(
            f"owner:{self.scenario.seed}:{character_id}:{generation}".encode(),
            usedforsecurity=False,
        ).digest()
        return base64.b64encode(digest).decode("ascii")

    def sell_character(self, character_id: int, *, revoke: bool = False) -> str:
        """Give the character a new owner hash; optionally kill its refresh tokens."""
        self._require(character_id)
        with self._lock:
            self._owner_generation[character_id] += 1
        if revoke:
            self.revoke_character(character_id)
        return self.owner_hash(character_id)

    def _require(self, character_id: int) -> None:
        if character_id not in self._names:
            raise KeyError(f"{character_id} is not a simulated character")

    # -- tokens -------------------------------------------------------------------------

    def issue_refresh_token(
        self, character_id: int, scopes: tuple[str, ...], client_id: str | None = None
    ) -> str:
        """A new refresh token for the character (provisioning for tests and demos)."""
        self._require(character_id)
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._refresh[token] = Grant(character_id, client_id or self.client_id, scopes)
        return token

    def revoke_character(self, character_id: int) -> int:
        """Kill every refresh token of the character; how many there were."""
        with self._lock:
            dead = [t for t, g in self._refresh.items() if g.character_id == character_id]
            for token in dead:
                del self._refresh[token]
        return len(dead)

    def revoke_token(self, token: str, client_id: str) -> None:
        """RFC 7009: unknown tokens and tokens of other clients are ignored."""
        with self._lock:
            grant = self._refresh.get(token)
            if grant is not None and grant.client_id == client_id:
                del self._refresh[token]

    def refresh(
        self,
        token: str,
        client_id: str,
        scope: str | None,
        *,
        withheld: Callable[[int], frozenset[str]] = lambda _: frozenset(),
    ) -> TokenSet:
        """The refresh-token grant (rotating the refresh token when configured).

        ``withheld(character_id)`` names scopes the SSO no longer grants: the grant loses
        them for good, and the new tokens carry only what is left.
        """
        with self._lock:
            grant = self._refresh.get(token)
            if grant is None or grant.client_id != client_id:
                raise OAuthError("invalid_grant", "Invalid refresh token. Token missing/expired.")
            if scope is not None and not set(scope.split()) <= set(grant.scopes):
                raise OAuthError("invalid_scope", "The requested scope is not part of the grant.")
            dropped = withheld(grant.character_id)
            grant = replace(grant, scopes=tuple(s for s in grant.scopes if s not in dropped))
            new_token = token
            if self.scenario.rotate_refresh_tokens:
                del self._refresh[token]
                new_token = secrets.token_urlsafe(18)
            self._refresh[new_token] = grant
        return self._token_set(grant, new_token)

    def _token_set(self, grant: Grant, refresh_token: str) -> TokenSet:
        lifetime_s = self.scenario.access_token_lifetime_s
        return TokenSet(self.access_token(grant, lifetime_s), lifetime_s, refresh_token)

    def _next_alg(self) -> str:
        with self._lock:
            self._signed += 1
            count = self._signed
        if self.scenario.signing == "alternate":
            return "ES256" if count % 2 == 0 else "RS256"
        return self.scenario.signing

    def access_token(self, grant: Grant, lifetime_s: int) -> str:
        """A signed JWT with EVE's claims."""
        now = int(self._clock.now().timestamp())
        alg = self._next_alg()
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "kid": RS256_KID if alg == "RS256" else ES256_KID,
            "sub": f"CHARACTER:EVE:{grant.character_id}",
            "azp": grant.client_id,
            "tenant": "tranquility",
            "tier": "live",
            "region": "world",
            "aud": [grant.client_id, EVE_AUDIENCE],
            "name": self._names[grant.character_id],
            "owner": self.owner_hash(grant.character_id),
            "exp": now + lifetime_s,
            "iat": now,
            "iss": self.issuer,
        }
        if len(grant.scopes) == 1:
            claims["scp"] = grant.scopes[0]
        elif grant.scopes:
            claims["scp"] = list(grant.scopes)
        return self._keys.sign(claims, alg)

    # -- authorization codes ------------------------------------------------------------

    def new_code(self, grant: Grant, redirect_uri: str, challenge: str | None) -> str:
        """An authorization code for a grant, valid for five minutes."""
        code = secrets.token_urlsafe(16)
        expires = self._clock.monotonic() + CODE_LIFETIME_S
        with self._lock:
            self._codes[code] = AuthCode(grant, redirect_uri, challenge, expires)
        return code

    def exchange_code(
        self, code: str, client_id: str, redirect_uri: str | None, verifier: str | None
    ) -> TokenSet:
        """The authorization-code grant: single use, 5 minutes, bound to client and URI."""
        with self._lock:
            entry = self._codes.get(code)
            if entry is None or entry.grant.client_id != client_id:
                raise OAuthError("invalid_grant", "Authorization code not found or already used.")
            if self._clock.monotonic() >= entry.expires_at_s:
                del self._codes[code]
                raise OAuthError("invalid_grant", "Authorization code has expired.")
            if redirect_uri is not None and redirect_uri != entry.redirect_uri:
                raise OAuthError("invalid_grant", "redirect_uri does not match the authorization.")
            if entry.code_challenge is not None:
                if not verifier:
                    raise OAuthError("invalid_grant", "code_verifier is required.")
                if pkce_challenge(verifier) != entry.code_challenge:
                    raise OAuthError("invalid_grant", "code_verifier does not match.")
            del self._codes[code]
            token = secrets.token_urlsafe(18)
            self._refresh[token] = entry.grant
        return self._token_set(entry.grant, token)
