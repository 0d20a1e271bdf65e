"""The ESI HTTP client: one pooled ``httpx.Client``, shared by all threads of a process.

Every request goes through the same steps::

    limiter.acquire  ->  httpx  ->  limiter.release  ->  stats  ->  interpret
        (wait for budget)            (book cost/limits)              (2xx/304 | retry | raise)

and the whole of it is retried by tenacity under :class:`~killcli.esi.retry.RetryPolicy`.
Errors that leave the client are ``EsiHttpError`` (a 4xx we do not retry: its ``status``
tells e.g. a 404 of ``/universe/names`` from a 422 of a wrong killmail hash),
``EsiUnavailable`` (retries exhausted, error limit, waited too long) and
``MalformedResponse`` (a 2xx body of the wrong shape).

Tokens travel only in the ``Authorization`` header; URLs, messages and reprs never hold
them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type

from killcli import __version__
from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.errors import EsiHttpError, EsiUnavailable
from killcli.esi.headers import parse_error_reset, parse_http_date, parse_int, parse_retry_after
from killcli.esi.models import (
    AffiliationResult,
    EsiResponse,
    ListPageResult,
    NameResult,
    RolesResult,
    StatusResult,
    check_killmail,
    parse_affiliations,
    parse_killmail_refs,
    parse_names,
    parse_roles,
    parse_status,
)
from killcli.esi.ratelimit import RateLimiter, SpendResult
from killcli.esi.retry import RetryBudget, RetryPolicy, RetrySignal
from killcli.esi.routes import character_of, route_of
from killcli.esi.stats import ClientStats
from killcli.esi.transport import ShardedTransport, tls_context
from killcli.textsafe import mask_url

COMPATIBILITY_DATE = "2025-08-26"  # pinned: the killmail schema we store was checked against it
POOL_SHARDS = 8  # connection pools of the client (see ShardedTransport)
MAX_NAME_IDS = 1000
MAX_AFFILIATION_IDS = 1000
Params = Mapping[str, str | int]


def user_agent(contact: str | None) -> str:
    """``killsync/<version> (<contact>)`` as CCP asks every application to send."""
    return f"killsync/{__version__}" + (f" ({contact})" if contact else "")


def character_killmails_path(character_id: int) -> str:
    return f"/characters/{character_id}/killmails/recent"


def corporation_killmails_path(corporation_id: int) -> str:
    return f"/corporations/{corporation_id}/killmails/recent"


@dataclass(frozen=True)
class _Call:
    """One logical request, the same for all its attempts."""

    method: str
    path: str
    url: str
    route: str
    owner: int | None
    group_hint: str | None
    headers: Mapping[str, str] = field(repr=False)  # may hold the bearer token
    request: httpx.Request = field(repr=False)  # built once, sent by every attempt


class EsiClient:
    """Thread-safe ESI client; build one per process and pass it to whoever needs it."""

    def __init__(
        self,
        base_url: str,
        *,
        user_agent: str,
        compatibility_date: str = COMPATIBILITY_DATE,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 20.0,
        max_connections: int = 32,
        transport: httpx.BaseTransport | None = None,
        local_address: str | None = None,
        limiter: RateLimiter | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock or SYSTEM_CLOCK
        self._limiter = limiter
        self._policy = retry_policy or RetryPolicy()
        self._rand = rand
        self.stats = ClientStats()
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            # local_address: KILLSYNC_SOURCE_ADDRESS, the address ESI keys our budget by
            transport=transport
            or ShardedTransport(shards=POOL_SHARDS, limits=limits, local_address=local_address),
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=limits,
            verify=tls_context(),
            headers={
                "User-Agent": user_agent,
                "X-Compatibility-Date": compatibility_date,
                "Accept": "application/json",
            },
            follow_redirects=False,
        )

    @property
    def limiter(self) -> RateLimiter | None:
        return self._limiter

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> EsiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- typed calls --------------------------------------------------------------------

    def fetch_killmail_list_page(
        self,
        character_id: int,
        access_token: str,
        page: int = 1,
        etag: str | None = None,
        *,
        conditional: bool = True,
    ) -> ListPageResult:
        """One page of a character's recent killmails.

        Page 1 is conditional on ``etag`` (the caller keeps it: the sync engine stores it on
        the character, ``Character.list_etag``) unless ``conditional`` is false; later pages
        never are, because a 304 has no rows to read.
        """
        return self._list_page(
            character_killmails_path(character_id),
            character_id,
            access_token,
            page,
            etag,
            conditional=conditional,
        )

    def fetch_corporation_killmail_list_page(
        self,
        corporation_id: int,
        character_id: int,
        access_token: str,
        page: int = 1,
        etag: str | None = None,
        *,
        conditional: bool = True,
    ) -> ListPageResult:
        """One page of a corporation's recent killmails, read with a director's token."""
        return self._list_page(
            corporation_killmails_path(corporation_id),
            character_id,
            access_token,
            page,
            etag,
            conditional=conditional,
        )

    def fetch_killmail(self, killmail_id: int, killmail_hash: str) -> dict[str, Any]:
        """A killmail's raw JSON body (public route, no token). 422: wrong hash."""
        response = self.request("GET", f"/killmails/{killmail_id}/{killmail_hash}")
        return check_killmail(response.url, response.body, killmail_id)

    def fetch_character_roles(self, character_id: int, access_token: str) -> RolesResult:
        """A character's corporation roles (scope ``esi-characters.read_corporation_roles.v1``,
        cached an hour): read before spending corp-killmail tokens, where a 403 costs 5."""
        response = self.request(
            "GET",
            f"/characters/{character_id}/roles",
            token=access_token,
            character_id=character_id,
        )
        return parse_roles(response.url, response.body, response.expires)

    def post_character_affiliation(self, character_ids: Iterable[int]) -> list[AffiliationResult]:
        """The current corporation of up to 1000 characters (public, cached an hour: fresher
        than ``GET /characters/{id}``)."""
        unique = list(dict.fromkeys(character_ids))
        if len(unique) > MAX_AFFILIATION_IDS:
            raise ValueError(
                f"/characters/affiliation takes at most {MAX_AFFILIATION_IDS} ids, "
                f"got {len(unique)}"
            )
        if not unique:
            return []
        response = self.request("POST", "/characters/affiliation", json=unique)
        return parse_affiliations(response.url, response.body)

    def post_universe_names(self, ids: Iterable[int]) -> list[NameResult]:
        """Names of up to 1000 IDs. One unknown ID fails all with ``EsiHttpError`` 404."""
        unique = list(dict.fromkeys(ids))
        if len(unique) > MAX_NAME_IDS:
            raise ValueError(f"/universe/names takes at most {MAX_NAME_IDS} ids, got {len(unique)}")
        if not unique:
            return []
        response = self.request("POST", "/universe/names", json=unique)
        return parse_names(response.url, response.body)

    def fetch_status(self) -> StatusResult:
        """Tranquility's status (players online, version, start time)."""
        response = self.request("GET", "/status")
        return parse_status(response.url, response.body)

    # -- the generic request ------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: Params | None = None,
        bucket_hint: str | None = None,
        character_id: int | None = None,
        etag: str | None = None,
        conditional: bool = True,
    ) -> EsiResponse:
        """Send one request with rate limiting and retries; return a 2xx or 304 answer.

        ``bucket_hint`` names the rate-limit group of a route ESI has not told us about yet.
        A token's character keys the route's bucket (pass ``character_id`` to say it
        explicitly); send tokens only to authenticated routes. ``etag`` is sent as
        ``If-None-Match`` unless ``conditional`` is false (a full answer is needed).
        """
        if_none_match = etag if conditional else None
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        owner = character_id if character_id is not None or token is None else character_of(token)
        request = self._http.build_request(method, path, params=params, json=json, headers=headers)
        call = _Call(
            request.method,
            path,
            str(request.url),
            route_of(path),
            owner,
            bucket_hint,
            headers,
            request,
        )
        return self._with_retries(call)

    def _list_page(
        self,
        path: str,
        character_id: int,
        access_token: str,
        page: int,
        etag: str | None,
        *,
        conditional: bool,
    ) -> ListPageResult:
        first = page == 1
        response = self.request(
            "GET",
            path,
            token=access_token,
            params={"page": page},
            character_id=character_id,
            etag=etag if first else None,
            conditional=conditional and first,
        )
        items = () if response.not_modified else parse_killmail_refs(response.url, response.body)
        return ListPageResult(
            status=response.status,
            page=page,
            pages=response.pages if response.pages is not None else 1,
            items=items,
            etag=response.etag,
            expires=response.expires,
            last_modified=response.last_modified,
        )

    def _with_retries(self, call: _Call) -> EsiResponse:
        try:
            return self._attempt(call)  # most requests succeed at once: no tenacity to run
        except RetrySignal as signal:
            failed = [signal]

        def attempt() -> EsiResponse:
            if failed:  # tenacity takes the first attempt's failure as its own first try
                raise failed.pop()
            return self._attempt(call)

        budget = RetryBudget(self._policy, self._rand)
        retrying = Retrying(
            retry=retry_if_exception_type(RetrySignal),
            stop=budget.stop,
            wait=budget.wait,
            after=budget.count,
            before_sleep=lambda _: self.stats.record_retry(self._group_of(call)),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except RetrySignal as signal:
            raise self._gave_up(call, signal, budget) from signal

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:  # a wait the limiter holds is 0 here: no sleep, no record
            self._clock.sleep(seconds)

    def _attempt(self, call: _Call) -> EsiResponse:
        reservation = None
        if self._limiter is not None:
            reservation = self._limiter.acquire(call.route, call.owner, call.group_hint)
        try:
            response = self._http.send(call.request)
        except (httpx.TransportError, httpx.DecodingError) as exc:
            if self._limiter is not None and reservation is not None:
                self._limiter.cancel(reservation)
            self.stats.record_transport_error(self._group_of(call))
            raise RetrySignal("transient", f"{type(exc).__name__} talking to ESI") from exc
        retry_after_s = parse_retry_after(
            response.headers.get("retry-after"), now=self._clock.now()
        )
        spend = SpendResult(None, 0)
        if self._limiter is not None and reservation is not None:
            spend = self._limiter.release(
                reservation,
                status=response.status_code,
                headers=response.headers,
                retry_after_s=retry_after_s,
            )
        group = response.headers.get("x-ratelimit-group") or self._group_of(call)
        self.stats.record_response(
            group,
            response.status_code,
            tokens=spend.tokens,
            bucket=None if spend.key is None else spend.key.label(),
        )
        return self._interpret(call, response, retry_after_s, group, spend)

    def _interpret(
        self,
        call: _Call,
        response: httpx.Response,
        retry_after_s: float | None,
        group: str | None,
        spend: SpendResult,
    ) -> EsiResponse:
        status = response.status_code
        if 200 <= status < 300 or status == 304:
            return self._answer(call, response, group)
        if status == 420:
            reset_s = parse_error_reset(response.headers.get("x-esi-error-limit-reset"))
            # The limiter now pauses every request until the reset, this one's retry too.
            wait_s = 0.0 if self._limiter is not None else self._first(reset_s, retry_after_s)
            raise RetrySignal(
                "rate_limited", "ESI error limit reached (420)", status=420, retry_after_s=wait_s
            )
        if status == 429:
            blocked = self._limiter is not None and spend.key is not None
            raise RetrySignal(
                "rate_limited",
                "ESI rate limit reached (429)",
                status=429,
                retry_after_s=0.0 if blocked else self._first(retry_after_s),
            )
        if status >= 500:
            raise RetrySignal(
                "transient", f"ESI answered {status}", status=status, retry_after_s=retry_after_s
            )
        raise EsiHttpError(status, mask_url(call.url), _error_detail(response))

    def _answer(self, call: _Call, response: httpx.Response, group: str | None) -> EsiResponse:
        body: Any = None
        if response.status_code != 304 and response.content:
            try:
                body = response.json()
            except ValueError as exc:  # truncated or garbled: worth another attempt
                raise RetrySignal("transient", "ESI sent a body that is not JSON") from exc
        headers = response.headers
        return EsiResponse(
            status=response.status_code,
            url=call.url,
            body=body,
            group=group,
            etag=headers.get("etag") or call.headers.get("If-None-Match"),
            expires=parse_http_date(headers.get("expires")),
            last_modified=parse_http_date(headers.get("last-modified")),
            pages=parse_int(headers.get("x-pages")),
            headers=headers,
        )

    def _first(self, *candidates: float | None) -> float:
        """The first wait ESI gave us, else the policy's fallback."""
        return next((c for c in candidates if c is not None), self._policy.fallback_wait_s)

    def _group_of(self, call: _Call) -> str | None:
        if self._limiter is None:
            return call.group_hint
        return self._limiter.group_of(call.route, call.group_hint)

    def _gave_up(self, call: _Call, signal: RetrySignal, budget: RetryBudget) -> EsiUnavailable:
        attempts = budget.transient + budget.rate_limited
        return EsiUnavailable(
            f"ESI {call.method} {mask_url(call.url)} failed: {signal.detail} "
            f"({attempts} attempt{'s' if attempts != 1 else ''})",
            hint="ESI may be in downtime or limiting this host; try again later",
        )


def _error_detail(response: httpx.Response) -> str:
    """ESI's ``{"error": ...}`` message, short; the raw text when it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:200]
    return ""
