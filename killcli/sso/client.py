"""The EVE SSO (OAuth 2) client: metadata, JWKS, token refresh, code exchange, revocation.

Endpoints come from the server's metadata document, never from constants, so the same code
talks to Tranquility, Singularity and the simulator. A client secret means a web
application (HTTP Basic at the token endpoint); without one this is a native application
using PKCE, which sends ``client_id`` in the form body instead.

Errors::

    SsoError           unreachable after bounded retries, or an answer we cannot use
    ├── TokenRejected  an access token that does not validate
    └── NeedsLogin     the refresh token is dead (invalid_grant / invalid_token /
                       invalid_scope): the character must log in again; never retry
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from killcli.errors import NeedsLogin, SsoError, TokenRejected
from killcli.esi.clock import Clock
from killcli.esi.retry import RetryPolicy, backoff_s
from killcli.sso.models import ServerMetadata, TokenClaims, TokenSet
from killcli.sso.tokens import Jwk, read_header, select_key, validate

WELL_KNOWN_PATH = "/.well-known/oauth-authorization-server"
NEEDS_LOGIN_ERRORS = frozenset({"invalid_grant", "invalid_token", "invalid_scope"})


class _Transient(Exception):
    """A 5xx or a transport failure: worth another attempt."""


class SsoClient:
    """Thread-safe EVE SSO client; metadata and signing keys are fetched once and cached."""

    def __init__(
        self,
        sso_base_url: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        user_agent: str | None = None,
        timeout_s: float = 10.0,
        retry_policy: RetryPolicy | None = None,
        rand: Callable[[], float] = random.random,
        leeway_s: float = 30.0,
    ) -> None:
        self._base_url = sso_base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret or None
        self._clock = clock or Clock()
        self._owns_http = http is None
        self._http = http or httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout_s),
            headers={"User-Agent": user_agent} if user_agent else None,
            follow_redirects=False,
        )
        self._policy = retry_policy or RetryPolicy(max_attempts=3, backoff_max_s=8.0)
        self._rand = rand
        self._leeway_s = leeway_s
        self._lock = threading.Lock()
        self._metadata: ServerMetadata | None = None
        self._keys: tuple[Jwk, ...] | None = None

    def __repr__(self) -> str:
        return f"SsoClient({self._base_url!r}, client_id={self.client_id!r})"

    @property
    def is_pkce_app(self) -> bool:
        """No client secret: authenticate with PKCE and ``client_id`` in the body."""
        return self._secret is None

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> SsoClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- discovery ------------------------------------------------------------------------

    def metadata(self) -> ServerMetadata:
        """The server's endpoints (fetched on first use, then cached)."""
        with self._lock:
            if self._metadata is None:
                self._metadata = self._fetch_metadata()
            return self._metadata

    def _fetch_metadata(self) -> ServerMetadata:
        doc = self._get_json(self._base_url + WELL_KNOWN_PATH, "metadata")
        required = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [name for name in required if not isinstance(doc.get(name), str)]
        if missing:
            raise SsoError(f"EVE SSO metadata lacks {', '.join(missing)}")
        revocation = doc.get("revocation_endpoint")
        return ServerMetadata(
            issuer=doc["issuer"],
            authorization_endpoint=doc["authorization_endpoint"],
            token_endpoint=doc["token_endpoint"],
            jwks_uri=doc["jwks_uri"],
            revocation_endpoint=revocation if isinstance(revocation, str) else None,
        )

    def _signing_key(self, kid: str | None, alg: str) -> Jwk:
        """The JWKS key for ``kid``/``alg``; an unknown kid refetches the set once."""
        jwks_uri = self.metadata().jwks_uri
        with self._lock:
            fetched = self._keys is None
            if self._keys is None:
                self._keys = self._fetch_keys(jwks_uri)
            key = select_key(self._keys, kid, alg)
            if key is None and not fetched:  # keys may have rotated since we cached them
                self._keys = self._fetch_keys(jwks_uri)
                key = select_key(self._keys, kid, alg)
        if key is None:
            raise TokenRejected(f"no {alg} signing key {kid!r} in the EVE SSO key set")
        return key

    def _fetch_keys(self, jwks_uri: str) -> tuple[Jwk, ...]:
        keys = self._get_json(jwks_uri, "signing keys").get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise SsoError("EVE SSO key set has no list of keys")
        return tuple(keys)

    # -- tokens ---------------------------------------------------------------------------

    def validate_access_token(self, access_token: str) -> TokenClaims:
        """Check an access token's signature and claims; raise ``TokenRejected`` if bad."""
        kid, alg = read_header(access_token)
        key = self._signing_key(kid, alg)
        return validate(access_token, key, alg, issuer=self.metadata().issuer,
                        client_id=self.client_id, now=self._clock.now(),
                        leeway_s=self._leeway_s)

    def authorize_url(self, redirect_uri: str, scopes: Sequence[str], state: str,
                      challenge: str | None = None) -> str:
        """Where to send the user's browser to log in (with a PKCE S256 challenge)."""
        params = {
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "client_id": self.client_id,
            "scope": " ".join(scopes),
            "state": state,
        }
        if challenge is not None:
            params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
        return str(httpx.URL(self.metadata().authorization_endpoint, params=params))

    def refresh(self, refresh_token: str) -> TokenSet:
        """New tokens for a refresh token; keep the returned (maybe rotated) refresh token."""
        return self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            what="token refresh", old_refresh_token=refresh_token, dead_grant_needs_login=True,
        )

    def exchange_code(self, code: str, verifier: str | None, redirect_uri: str) -> TokenSet:
        """Trade a login callback's code (and the PKCE verifier) for tokens."""
        fields = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if verifier is not None:
            fields["code_verifier"] = verifier
        return self._token_request(fields, what="login code exchange", old_refresh_token=None,
                                   dead_grant_needs_login=False)

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token (logout); the character must log in again afterwards."""
        endpoint = self.metadata().revocation_endpoint
        if endpoint is None:
            raise SsoError("EVE SSO announces no revocation endpoint")
        fields = {"token_type_hint": "refresh_token", "token": refresh_token}
        response = self._post_form(endpoint, fields, "revocation")
        if response.status_code != 200:
            raise self._refusal(response, "revocation", fields, dead_grant_needs_login=False)

    def _token_request(self, fields: dict[str, str], *, what: str,
                       old_refresh_token: str | None, dead_grant_needs_login: bool) -> TokenSet:
        now = self._clock.now()
        response = self._post_form(self.metadata().token_endpoint, fields, what)
        if response.status_code != 200:
            raise self._refusal(response, what, fields, dead_grant_needs_login)
        payload = _json_object(response, what)
        access_token = payload.get("access_token")
        if not isinstance(access_token, str):
            raise SsoError(f"EVE SSO {what} answer has no access token")
        claims = self.validate_access_token(access_token)
        rotated = payload.get("refresh_token")
        refresh_token = rotated if isinstance(rotated, str) and rotated else old_refresh_token
        if refresh_token is None:
            raise SsoError(f"EVE SSO {what} answer has no refresh token")
        expires_at = claims.expires_at
        expires_in = payload.get("expires_in")
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            expires_at = min(expires_at, now + timedelta(seconds=expires_in))
        return TokenSet(access_token, refresh_token, expires_at, claims)

    def _refusal(self, response: httpx.Response, what: str, fields: Mapping[str, str],
                 dead_grant_needs_login: bool) -> SsoError:
        """The exception for a non-200 token-endpoint answer (a 4xx: 5xx were retried)."""
        error, description = _oauth_error(response)
        for secret in (*fields.values(), self._secret or ""):
            if len(secret) >= 8:  # OAuth servers echo little, but never pass a secret on
                description = description.replace(secret, "***")
        detail = f"{error}: {description}" if description else error
        if dead_grant_needs_login and error in NEEDS_LOGIN_ERRORS:
            return NeedsLogin(f"EVE SSO refused the refresh token ({detail})", reason=error)
        hint = ("check the client id and secret (KILLSYNC_CLIENT_ID, KILLSYNC_CLIENT_SECRET)"
                if error == "invalid_client" else None)
        return SsoError(f"EVE SSO refused the {what} (HTTP {response.status_code}, {detail})",
                        hint=hint)

    # -- HTTP with bounded retries ----------------------------------------------------------

    def _post_form(self, url: str, fields: Mapping[str, str], what: str) -> httpx.Response:
        data = dict(fields)
        auth = None
        if self._secret is None:
            data["client_id"] = self.client_id
        else:
            auth = httpx.BasicAuth(self.client_id, self._secret)
        return self._send("POST", url, what, data=data, auth=auth)

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        response = self._send("GET", url, what)
        if response.status_code != 200:
            raise SsoError(f"EVE SSO {what} request answered HTTP {response.status_code}")
        return _json_object(response, what)

    def _send(self, method: str, url: str, what: str, *, data: dict[str, str] | None = None,
              auth: httpx.BasicAuth | None = None) -> httpx.Response:
        attempts = self._policy.max_attempts
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(attempts),
            wait=self._backoff,
            sleep=self._clock.sleep,
            reraise=True,
        )
        try:
            return retrying(self._send_once, method, url, data, auth)
        except _Transient as exc:
            raise SsoError(f"EVE SSO {what} failed after {attempts} attempts: {exc}",
                           hint="EVE SSO may be down; try again later") from exc

    def _backoff(self, state: RetryCallState) -> float:
        return backoff_s(state.attempt_number, self._policy, self._rand)

    def _send_once(self, method: str, url: str, data: dict[str, str] | None,
                   auth: httpx.BasicAuth | None) -> httpx.Response:
        try:
            response = self._http.request(method, url, data=data, auth=auth)
        except httpx.TransportError as exc:
            raise _Transient(type(exc).__name__) from exc
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}")
        return response


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise SsoError(f"EVE SSO {what} answer is not JSON") from exc
    if not isinstance(body, dict):
        raise SsoError(f"EVE SSO {what} answer is not a JSON object")
    return body


def _oauth_error(response: httpx.Response) -> tuple[str, str]:
    """``(error, error_description)`` of an OAuth error answer, tolerating non-JSON."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}", ""
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}", ""
    error = body.get("error")
    description = body.get("error_description")
    return (error if isinstance(error, str) else f"HTTP {response.status_code}",
            description[:200] if isinstance(description, str) else "")
