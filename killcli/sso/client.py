"""The EVE SSO (OAuth 2) client: metadata, JWKS, token refresh, code exchange, revocation.

Endpoints come from the server's metadata document, never from constants, so the same code
talks to Tranquility, Singularity and the simulator. A client secret means a web
application (HTTP Basic at the token endpoint); without one this is a native application
using PKCE, which sends ``client_id`` in the form body instead.

A token request is two steps so that callers can store a rotated refresh token before
anything else can fail: :meth:`SsoClient.request_refresh` spends the refresh token and
returns the SSO's answer unverified, :meth:`SsoClient.verify` then checks its access token
(which may fetch the key set). :meth:`SsoClient.refresh` does both for callers with nothing
to store yet. Token times are checked on the SSO's clock: every answer's ``Date`` header
tells how far this host's clock is off (up to ``MAX_CLOCK_OFFSET_S``), on top of a leeway.

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
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from killcli.backoff import tenacity_wait
from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.errors import NeedsLogin, SsoError, TokenRejected
from killcli.esi.retry import RetryPolicy
from killcli.esi.transport import bound_transport, tls_context
from killcli.sso.models import IssuedTokens, ServerMetadata, TokenClaims, TokenSet
from killcli.sso.tokens import Jwk, read_header, select_key, validate

WELL_KNOWN_PATH = "/.well-known/oauth-authorization-server"
NEEDS_LOGIN_ERRORS = frozenset({"invalid_grant", "invalid_token", "invalid_scope"})
DEFAULT_LEEWAY_S = 30.0  # slack on exp, nbf and iat once the SSO's clock is known
MAX_CLOCK_OFFSET_S = 3600.0  # a Date header further off than this is not believed
MAX_EXPIRES_IN_S = 86_400.0  # a longer (or non-finite) expires_in is ignored: exp decides


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
        leeway_s: float = DEFAULT_LEEWAY_S,
        local_address: str | None = None,
    ) -> None:
        self._base_url = sso_base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret or None
        self._clock = clock or SYSTEM_CLOCK
        self._owns_http = http is None
        self._http = http or httpx.Client(
            transport=transport or bound_transport(local_address),
            timeout=httpx.Timeout(timeout_s),
            verify=tls_context(),
            headers={"User-Agent": user_agent} if user_agent else None,
            follow_redirects=False,
        )
        self._policy = retry_policy or RetryPolicy(max_attempts=3, backoff_max_s=8.0)
        self._rand = rand
        self._leeway_s = leeway_s
        self._lock = threading.Lock()
        self._metadata: ServerMetadata | None = None
        self._keys: tuple[Jwk, ...] | None = None
        self._clock_offset_s: float | None = None

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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

    def _prefetch_keys(self) -> None:
        """Fetch the key set now if it is not cached, before a token is spent on a request."""
        jwks_uri = self.metadata().jwks_uri
        with self._lock:
            if self._keys is None:
                self._keys = self._fetch_keys(jwks_uri)

    def _fetch_keys(self, jwks_uri: str) -> tuple[Jwk, ...]:
        keys = self._get_json(jwks_uri, "signing keys").get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise SsoError("EVE SSO key set has no list of keys")
        return tuple(keys)

    # -- clocks ---------------------------------------------------------------------------

    @property
    def sso_clock_offset_s(self) -> float | None:
        """How far the SSO's clock is ahead of this host's (its last ``Date`` header)."""
        return self._clock_offset_s

    def sso_now(self) -> datetime:
        """Now on the SSO's clock, as far as its ``Date`` headers tell (else this host's)."""
        return self._clock.now() + timedelta(seconds=_believable(self._clock_offset_s))

    def clock_note(self) -> str | None:
        """A sentence on this host's clock when it is off the SSO's by more than the leeway."""
        offset = self._clock_offset_s
        if offset is None or abs(offset) <= self._leeway_s:
            return None
        side = "behind" if offset > 0 else "ahead of"
        text = f"this host's clock is {abs(offset):.0f} s {side} the EVE SSO's (its Date header)"
        if abs(offset) > MAX_CLOCK_OFFSET_S:
            return (
                f"{text}, more than the {MAX_CLOCK_OFFSET_S:.0f} s killsync corrects "
                "for: fix the host clock (NTP)"
            )
        return f"{text}; token times were checked on the SSO's clock"

    def _note_date(self, response: httpx.Response) -> None:
        """Remember the SSO's clock offset from an answer's ``Date`` header."""
        offset = _date_offset_s(response.headers, self._clock.now())
        if offset is not None:
            self._clock_offset_s = offset

    # -- tokens ---------------------------------------------------------------------------

    def validate_access_token(self, access_token: str) -> TokenClaims:
        """Check an access token's signature and claims; raise ``TokenRejected`` if bad.

        Times are checked on the SSO's clock with the leeway; a rejection names the clock
        difference when there is one worth knowing about.
        """
        kid, alg = read_header(access_token)
        key = self._signing_key(kid, alg)
        try:
            return validate(
                access_token,
                key,
                alg,
                issuer=self.metadata().issuer,
                client_id=self.client_id,
                now=self.sso_now(),
                leeway_s=self._leeway_s,
            )
        except TokenRejected as exc:
            note = self.clock_note()
            if note is None:
                raise
            raise TokenRejected(f"{exc.message} ({note})") from exc

    def verify(self, issued: IssuedTokens) -> TokenSet:
        """Validate a token answer's access token (may fetch the key set).

        Raises ``TokenRejected`` for a token that does not validate and ``SsoError`` when
        the key set cannot be fetched or the answer had no access token.
        """
        if issued.access_token is None:
            raise SsoError("EVE SSO token answer has no access token")
        claims = self.validate_access_token(issued.access_token)
        offset_s = issued.sso_clock_offset_s
        if offset_s is None:  # e.g. a stored answer: the offset validation just learnt
            offset_s = self._clock_offset_s
        return TokenSet(
            issued.access_token,
            issued.refresh_token,
            _host_expiry(claims, issued, offset_s),
            claims,
        )

    def authorize_url(
        self, redirect_uri: str, scopes: Sequence[str], state: str, challenge: str | None = None
    ) -> str:
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

    def request_refresh(self, refresh_token: str) -> IssuedTokens:
        """Spend a refresh token; the answer is not verified yet: store its refresh token
        (maybe rotated, the old one then dead) before calling :meth:`verify`."""
        return self._request_tokens(
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            what="token refresh",
            old_refresh_token=refresh_token,
            dead_grant_needs_login=True,
        )

    def refresh(self, refresh_token: str) -> TokenSet:
        """New, verified tokens for a refresh token; keep the returned refresh token.

        For callers with nothing stored yet (adding a character): the key set is fetched
        first so that an unreachable one fails before the SSO rotates the token.
        """
        self._prefetch_keys()
        return self.verify(self.request_refresh(refresh_token))

    def exchange_code(self, code: str, verifier: str | None, redirect_uri: str) -> TokenSet:
        """Trade a login callback's code (and the PKCE verifier) for verified tokens."""
        fields = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if verifier is not None:
            fields["code_verifier"] = verifier
        self._prefetch_keys()
        return self.verify(
            self._request_tokens(
                fields,
                what="login code exchange",
                old_refresh_token=None,
                dead_grant_needs_login=False,
            )
        )

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token (logout); the character must log in again afterwards."""
        endpoint = self.metadata().revocation_endpoint
        if endpoint is None:
            raise SsoError("EVE SSO announces no revocation endpoint")
        fields = {"token_type_hint": "refresh_token", "token": refresh_token}
        response = self._post_form(endpoint, fields, "revocation")
        if response.status_code != 200:
            raise self._refusal(response, "revocation", fields, dead_grant_needs_login=False)

    def _request_tokens(
        self,
        fields: dict[str, str],
        *,
        what: str,
        old_refresh_token: str | None,
        dead_grant_needs_login: bool,
    ) -> IssuedTokens:
        """POST to the token endpoint and parse the answer; nothing else (no validation)."""
        requested_at = self._clock.now()
        response = self._post_form(self.metadata().token_endpoint, fields, what)
        if response.status_code != 200:
            raise self._refusal(response, what, fields, dead_grant_needs_login)
        payload = _json_object(response, what)
        access_token = payload.get("access_token")
        rotated = payload.get("refresh_token")
        refresh_token = rotated if isinstance(rotated, str) and rotated else old_refresh_token
        if refresh_token is None:
            raise SsoError(f"EVE SSO {what} answer has no refresh token")
        return IssuedTokens(
            access_token=access_token if isinstance(access_token, str) and access_token else None,
            refresh_token=refresh_token,
            expires_in_s=_lifetime_s(payload.get("expires_in")),
            requested_at=requested_at,
            sso_clock_offset_s=_date_offset_s(response.headers, self._clock.now()),
        )

    def _refusal(
        self,
        response: httpx.Response,
        what: str,
        fields: Mapping[str, str],
        dead_grant_needs_login: bool,
    ) -> SsoError:
        """The exception for a non-200 token-endpoint answer (a 4xx: 5xx were retried)."""
        error, description = _oauth_error(response)
        for secret in (*fields.values(), self._secret or ""):
            if len(secret) >= 8:  # OAuth servers echo little, but never pass a secret on
                description = description.replace(secret, "***")
        detail = f"{error}: {description}" if description else error
        if dead_grant_needs_login and error in NEEDS_LOGIN_ERRORS:
            return NeedsLogin(f"EVE SSO refused the refresh token ({detail})", reason=error)
        hint = (
            "check the client id and secret (KILLSYNC_CLIENT_ID, KILLSYNC_CLIENT_SECRET)"
            if error == "invalid_client"
            else None
        )
        return SsoError(
            f"EVE SSO refused the {what} (HTTP {response.status_code}, {detail})", hint=hint
        )

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

    def _send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        data: dict[str, str] | None = None,
        auth: httpx.BasicAuth | None = None,
    ) -> httpx.Response:
        attempts = self._policy.max_attempts
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(attempts),
            wait=tenacity_wait(self._policy.backoff, self._rand),
            sleep=self._clock.sleep,
            reraise=True,
        )
        try:
            return retrying(self._send_once, method, url, data, auth)
        except _Transient as exc:
            raise SsoError(
                f"EVE SSO {what} failed after {attempts} attempts: {exc}",
                hint="EVE SSO may be down; try again later",
            ) from exc

    def _send_once(
        self, method: str, url: str, data: dict[str, str] | None, auth: httpx.BasicAuth | None
    ) -> httpx.Response:
        try:
            response = self._http.request(method, url, data=data, auth=auth)
        except httpx.TransportError as exc:
            raise _Transient(type(exc).__name__) from exc
        self._note_date(response)
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}")
        return response


def _date_offset_s(headers: httpx.Headers, host_now: datetime) -> float | None:
    """Seconds the SSO's clock is ahead of ``host_now`` by an answer's ``Date``; None if
    unusable. A cache in between keeps the origin's ``Date`` and says how old the copy is
    in ``Age`` (RFC 9111), so that is added back."""
    date, age = headers.get("date"), headers.get("age", "0")
    if not date or not (age.isascii() and age.isdigit() and len(age) <= 10):
        return None
    try:
        sent = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if sent.tzinfo is None:  # "-0000" in RFC 5322: UTC without a claimed zone
        sent = sent.replace(tzinfo=UTC)
    return (sent - host_now).total_seconds() + int(age)


def _believable(offset_s: float | None) -> float:
    """The clock offset to correct by: none when unknown or implausibly large."""
    if offset_s is None or abs(offset_s) > MAX_CLOCK_OFFSET_S:
        return 0.0
    return offset_s


def _lifetime_s(value: object) -> float | None:
    """A token answer's ``expires_in`` when it is a plausible number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value <= MAX_EXPIRES_IN_S else None  # refuses NaN too


def _host_expiry(claims: TokenClaims, issued: IssuedTokens, offset_s: float | None) -> datetime:
    """When the access token expires on this host's clock.

    ``exp`` is on the SSO's clock: shift it by the clock offset. ``expires_in`` counts
    from the request, so it caps the result whatever the clocks say.
    """
    expires_at = claims.expires_at - timedelta(seconds=_believable(offset_s))
    if issued.expires_in_s is not None:
        expires_at = min(expires_at, issued.requested_at + timedelta(seconds=issued.expires_in_s))
    return expires_at


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
    return (
        error if isinstance(error, str) else f"HTTP {response.status_code}",
        description[:200] if isinstance(description, str) else "",
    )
