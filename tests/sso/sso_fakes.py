"""A stateful fake of EVE SSO for ``httpx.MockTransport``, with real RS256/ES256 keys.

Keys are generated per fake with ``cryptography``; tokens are signed with PyJWT. Endpoint
paths deliberately differ from EVE's, so a client that hard-codes them fails.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from killcli.esi import ManualClock

BASE = "https://sso.test"
CLIENT_ID = "app-123"
SECRET = "s3cret-value-xyz"
CHARACTER = 90000001
SCOPE = "esi-killmails.read_killmails.v1"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]


def rsa_key(kid: str = "JWT-Signature-Key") -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "RS256", private, {**jwk, "kid": kid, "alg": "RS256", "use": "sig"})


def ec_key(kid: str = "ES-Key") -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "ES256", private, {**jwk, "kid": kid, "alg": "ES256", "use": "sig"})


@functools.cache
def _shared_rsa_key() -> SigningKey:
    """One RSA key for all fakes: generating 2048-bit keys is the slow part of the suite."""
    return rsa_key()


@functools.cache
def _shared_ec_key() -> SigningKey:
    return ec_key()


class FakeSso:
    """Metadata, JWKS, token and revocation endpoints; counts what it served."""

    def __init__(
        self,
        clock: ManualClock,
        *,
        secret: str | None = SECRET,
        issuer: str = "login.test",
        rotate: bool = True,
    ) -> None:
        self.clock = clock
        self.secret = secret
        self.issuer = issuer
        self.rotate = rotate
        self.rsa = _shared_rsa_key()
        self.ec = _shared_ec_key()
        self.published = [self.rsa, self.ec]
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.token_requests: list[httpx.Request] = []
        self.refresh_tokens: dict[str, int] = {"refresh-1": CHARACTER}
        self.codes: dict[str, tuple[str | None, str, int]] = {}
        self.revoked: list[str] = []
        self.scripted: deque[int] = deque()
        self.next_refresh = 2
        self.skew_s = 0.0  # the SSO's clock minus the client's (tokens and Date use it)
        self.send_date = False  # add a Date header, as EVE SSO does
        self.jwks_status: int | None = None  # the key set answers this instead of keys
        self.expires_in: Any = 1199
        self.send_access_token = True

    def wall(self) -> float:
        """The SSO's own clock."""
        return self.clock.wall() + self.skew_s

    def metadata(self) -> dict[str, str]:
        return {
            "issuer": "https://login.test",
            "authorization_endpoint": f"{BASE}/v9/authorize",
            "token_endpoint": f"{BASE}/v9/token",
            "jwks_uri": f"{BASE}/v9/keys",
            "revocation_endpoint": f"{BASE}/v9/revoke",
        }

    def mint(
        self,
        *,
        key: SigningKey | None = None,
        character_id: int = CHARACTER,
        expires_in_s: float = 1200,
        **overrides: Any,
    ) -> str:
        """An access token as EVE issues it, with claims overridable (None drops one)."""
        key = key or self.rsa
        claims: dict[str, Any] = {
            "scp": [SCOPE],
            "jti": "x",
            "kid": key.kid,
            "sub": f"CHARACTER:EVE:{character_id}",
            "azp": CLIENT_ID,
            "tenant": "tranquility",
            "tier": "live",
            "region": "world",
            "aud": [CLIENT_ID, "EVE Online"],
            "name": "Pilot One",
            "owner": "owner-hash=",
            "exp": int(self.wall() + expires_in_s),
            "iat": int(self.wall()),
            "iss": self.issuer,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})

    def grant_code(self, code: str, challenge: str | None, redirect_uri: str) -> None:
        self.codes[code] = (challenge, redirect_uri, CHARACTER)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self._answer(request)
        if self.send_date:
            response.headers["Date"] = formatdate(self.wall(), usegmt=True)
        return response

    def _answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        with self.lock:
            self.calls[path] = self.calls.get(path, 0) + 1
            if self.scripted:
                return httpx.Response(self.scripted.popleft(), text="scripted")
            if path == "/.well-known/oauth-authorization-server":
                return httpx.Response(200, json=self.metadata())
            if path == "/v9/keys":
                if self.jwks_status is not None:
                    return httpx.Response(self.jwks_status, text="Service Unavailable")
                return httpx.Response(200, json={"keys": [k.jwk for k in self.published]})
            if path == "/v9/token":
                self.token_requests.append(request)
                return self._token(request)
            if path == "/v9/revoke":
                return self._revoke(request)
        return httpx.Response(404)

    def _client_ok(self, request: httpx.Request, form: dict[str, str]) -> bool:
        if self.secret is None:
            return bool(
                form.get("client_id") == CLIENT_ID and "authorization" not in request.headers
            )
        expected = base64.b64encode(f"{CLIENT_ID}:{self.secret}".encode()).decode()
        return bool(request.headers.get("authorization") == f"Basic {expected}")

    def _form(self, request: httpx.Request) -> dict[str, str] | None:
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return None
        return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = self._form(request)
        if form is None:
            return httpx.Response(400, json={"error": "invalid_request"})
        if not self._client_ok(request, form):
            return httpx.Response(
                401, json={"error": "invalid_client", "error_description": "Unknown client"}
            )
        if form.get("grant_type") == "refresh_token":
            return self._refresh(form)
        if form.get("grant_type") == "authorization_code":
            return self._exchange(form)
        return httpx.Response(400, json={"error": "unsupported_grant_type"})

    def _tokens(self, character_id: int, refresh: str | None) -> httpx.Response:
        body: dict[str, Any] = {
            "access_token": self.mint(character_id=character_id),
            "expires_in": self.expires_in,
            "token_type": "Bearer",
        }
        if not self.send_access_token:
            del body["access_token"]
        if refresh is not None:
            body["refresh_token"] = refresh
        # json.dumps, not json=: a broken SSO may well send NaN, which httpx refuses to encode
        return httpx.Response(
            200, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )

    def _refresh(self, form: dict[str, str]) -> httpx.Response:
        old = form.get("refresh_token", "")
        if old not in self.refresh_tokens:
            return httpx.Response(
                400,
                json={
                    "error": "invalid_grant",
                    "error_description": f"Invalid refresh token. Token '{old}' missing/expired.",
                },
            )
        character = self.refresh_tokens[old]
        if not self.rotate:
            return self._tokens(character, None)
        del self.refresh_tokens[old]
        new = f"refresh-{self.next_refresh}"
        self.next_refresh += 1
        self.refresh_tokens[new] = character
        return self._tokens(character, new)

    def _exchange(self, form: dict[str, str]) -> httpx.Response:
        code = form.get("code", "")
        if code not in self.codes:
            return httpx.Response(400, json={"error": "invalid_grant"})
        challenge, redirect_uri, character = self.codes.pop(code)
        verifier = form.get("code_verifier", "")
        computed = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if challenge is not None and computed != challenge:
            return httpx.Response(
                400,
                json={"error": "invalid_grant", "error_description": "PKCE verification failed"},
            )
        if form.get("redirect_uri") != redirect_uri:
            return httpx.Response(400, json={"error": "invalid_grant"})
        refresh = f"refresh-{self.next_refresh}"
        self.next_refresh += 1
        self.refresh_tokens[refresh] = character
        return self._tokens(character, refresh)

    def _revoke(self, request: httpx.Request) -> httpx.Response:
        form = self._form(request)
        if form is None or not self._client_ok(request, form):
            return httpx.Response(401, json={"error": "invalid_client"})
        token = form.get("token", "")
        self.refresh_tokens.pop(token, None)
        self.revoked.append(token)
        return httpx.Response(200)
