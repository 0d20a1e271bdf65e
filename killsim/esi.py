"""ESI over HTTP: routing, authentication, rate limits, faults and conditional requests.

Order of checks for one request: error limit (420), route (404/405), the market
history's per-minute limit (500, :class:`killsim.market.HistoryLimiter`), bearer token
(401/403), token bucket (429), downtime (503), latency, injected fault (stall -> 504,
5xx), the route's answer, ``If-None-Match`` (304), malformed/truncated body. Then the
bucket is charged for the final status and the error limit counts it. The corporation
list's membership and Director checks (403) are part of the route's answer, so they cost
5 ``corp-killmail`` tokens as on ESI.

As on ESI, the per-IP budgets are keyed by the *peer address* of the connection
(``request.client_ip``): the ``killmail`` bucket (``ip``, or ``(ip, application)`` with a
token) and the error limit. Clients bound to 127.0.0.2, 127.0.0.3, ... (any 127.x.y.z is
loopback) are thus separate hosts, and ``stats.tokens_spent["killmail"]`` is per address.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt

from killsim.clock import Clock
from killsim.esi_routes import Answer, EsiData
from killsim.faults import Fault, Faults
from killsim.http import Request, Response
from killsim.keys import SigningKeys
from killsim.market import HISTORY_500, HistoryLimiter
from killsim.ratelimit import BucketReport, ErrorLimiter, Ticket, TokenBuckets, key_text
from killsim.scenario import READ_CORP_KILLMAILS, READ_CORP_ROLES, READ_KILLMAILS
from killsim.stats import Stats

log = logging.getLogger(__name__)
UNKNOWN_ROUTE = "/{unknown}"
_ERROR_420 = (
    "This software has exceeded the error limit for ESI. If you are a user, please "
    "contact the maker of this software. If you are the maker of this software, "
    "please fix your code."
)
_STATUS_TEXT = MappingProxyType(
    {
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "The datasource tranquility is temporarily unavailable",
        504: "Timeout contacting tranquility",
        422: "Invalid killmail_id and/or killmail_hash",
    }
)


@dataclass(frozen=True)
class Route:
    """One ESI route: its short name, template, rate-limit group and required scope."""

    name: str
    method: str
    template: str
    group: str | None = None
    scope: str | None = None

    @property
    def pattern(self) -> re.Pattern[str]:
        """The regular expression matching concrete paths of this route."""
        regex = re.sub(r"\{killmail_hash\}", r"(?P<killmail_hash>[^/]+)", self.template)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>\\d+)", regex)
        return re.compile(f"^{regex}/?$")


ROUTES = (
    Route(
        "list",
        "GET",
        "/characters/{character_id}/killmails/recent",
        "char-killmail",
        READ_KILLMAILS,
    ),
    Route(
        "corp_list",
        "GET",
        "/corporations/{corporation_id}/killmails/recent",
        "corp-killmail",
        READ_CORP_KILLMAILS,
    ),
    Route("roles", "GET", "/characters/{character_id}/roles", "char-detail", READ_CORP_ROLES),
    Route("body", "GET", "/killmails/{killmail_id}/{killmail_hash}", "killmail"),
    Route("names", "POST", "/universe/names"),
    Route("affiliation", "POST", "/characters/affiliation"),
    Route("character", "GET", "/characters/{character_id}"),
    Route("corporation", "GET", "/corporations/{corporation_id}"),
    Route("alliance", "GET", "/alliances/{alliance_id}"),
    Route("type", "GET", "/universe/types/{type_id}"),
    Route("system", "GET", "/universe/systems/{system_id}"),
    Route("group", "GET", "/universe/groups/{group_id}"),
    Route("category", "GET", "/universe/categories/{category_id}"),
    Route("constellation", "GET", "/universe/constellations/{constellation_id}"),
    Route("market_history", "GET", "/markets/{region_id}/history"),
    Route("market_prices", "GET", "/markets/prices"),
    Route("status", "GET", "/status", "status"),
)


@dataclass(frozen=True)
class Caller:
    """Who is asking: verified token claims (if any) and the answer when refused."""

    claims: dict[str, Any] | None
    refusal: Response | None = None

    @property
    def character_id(self) -> int | None:
        """The character of the token (``sub``), None without a valid token."""
        sub = str((self.claims or {}).get("sub", ""))
        prefix, _, number = sub.rpartition(":")
        return int(number) if prefix == "CHARACTER:EVE" and number.isdigit() else None

    @property
    def application(self) -> str | None:
        """The client id of the token (``azp``)."""
        return None if self.claims is None else str(self.claims.get("azp", ""))


def _scopes(claims: dict[str, Any]) -> set[str]:
    scp = claims.get("scp")
    if isinstance(scp, str):
        return {scp}
    return {str(s) for s in scp} if isinstance(scp, list) else set()


class EsiApp:
    """Answers every ESI request (everything not under ``/sso``)."""

    def __init__(
        self,
        *,
        data: EsiData,
        keys: SigningKeys,
        buckets: TokenBuckets,
        errors: ErrorLimiter,
        faults: Faults,
        stats: Stats,
        clock: Clock,
        stop: threading.Event,
        history_limiter: HistoryLimiter | None = None,
    ) -> None:
        self._data = data
        self._history_limiter = history_limiter
        self._keys = keys
        self._buckets = buckets
        self._errors = errors
        self._faults = faults
        self._stats = stats
        self._clock = clock
        self._stop = stop
        self._routes = [(route, route.pattern) for route in ROUTES]

    # -- routing --------------------------------------------------------------------------

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | Response:
        """The route and path parameters, or the 404/405 answer."""
        if path.startswith("/latest/"):
            path = path[len("/latest") :]
        wrong_method = False
        for route, pattern in self._routes:
            found = pattern.match(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict()
            wrong_method = True
        if wrong_method:
            return Response.error(405, "Method not allowed")
        return Response.error(404, "Not found")

    def route_template(self, request: Request) -> str:
        """The route template a request is counted under in statistics."""
        matched = self.match(request.method, request.path)
        return matched[0].template if isinstance(matched, tuple) else UNKNOWN_ROUTE

    # -- the pipeline -------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        ip = request.client_ip
        error_state = self._errors.state(ip)
        if error_state.blocked:  # every route, even unknown ones, until the window resets
            response = Response.error(420, _ERROR_420)
            response.headers.update(error_state.headers())
            return response
        matched = self.match(request.method, request.path)
        if isinstance(matched, Response):
            return self._finish(matched, ip, None)
        route, params = matched
        if (
            route.name == "market_history"
            and self._history_limiter is not None
            and not self._history_limiter.admit(ip)
        ):  # the route's own per-minute limit (no bucket, no headers; a 500 beyond it)
            return self._finish(Response.error(500, HISTORY_500), ip, None)
        caller = self._authenticate(route, request, params)
        ticket: Ticket | None = None
        key = self._bucket_key(route, caller, ip)
        if key is not None and route.group is not None:
            admitted = self._buckets.admit(route.group, key)
            if isinstance(admitted, BucketReport):
                response = Response.error(429, "Too many requests")
                response.headers.update(admitted.headers())
                return self._finish(response, ip, None)
            ticket = admitted
        response, counted = self._answer(route, request, params, caller, ip)
        return self._finish(response, ip, ticket, counted=counted)

    def _finish(
        self, response: Response, ip: str, ticket: Ticket | None, *, counted: bool = False
    ) -> Response:
        if ticket is not None:
            report = self._buckets.settle(ticket, response.status)
            response.headers.update(report.headers())
            self._stats.tokens(ticket.group, key_text(ticket.key), report.used)
        state = self._errors.state(ip) if counted else self._errors.record(ip, response.status)
        response.headers.update(state.headers())
        response.headers["X-Esi-Request-Id"] = str(uuid.uuid4())
        return response

    def _bucket_key(self, route: Route, caller: Caller, ip: str) -> Hashable | None:
        if route.group is None or not self._buckets.has(route.group):
            return None
        if route.scope is not None:  # authenticated route: (application, character)
            if caller.claims is None:
                return None
            return (caller.application, caller.character_id)
        return ip if caller.claims is None else (ip, caller.application)

    # -- authentication -------------------------------------------------------------------------

    def _authenticate(self, route: Route, request: Request, params: dict[str, str]) -> Caller:
        header = request.header("authorization") or ""
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        claims: dict[str, Any] | None = None
        if token:
            try:
                claims = self._keys.verify(token)
            except jwt.InvalidTokenError:
                claims = None
        if route.scope is None:
            return Caller(claims)
        if claims is None:
            message = "authentication failure" if token else "authorization not provided"
            return Caller(None, Response.error(401, message))
        return Caller(claims, self._authorize(route, claims, params))

    def _authorize(
        self, route: Route, claims: dict[str, Any], params: dict[str, str]
    ) -> Response | None:
        if int(claims.get("exp", 0)) <= self._clock.now().timestamp():
            return Response.error(403, "token is expired")
        if route.scope not in _scopes(claims):
            return Response.error(403, f"token not valid for scope(s): {route.scope}")
        # Character routes: the token's own character only. The corporation route checks
        # membership and the Director role when it answers (esi_routes).
        if "character_id" in params and Caller(claims).character_id != int(params["character_id"]):
            return Response.error(403, "token not valid for this character")
        return None

    # -- answering -----------------------------------------------------------------------------

    def _answer(
        self, route: Route, request: Request, params: dict[str, str], caller: Caller, ip: str
    ) -> tuple[Response, bool]:
        """The response and whether the error limit already counted it."""
        if caller.refusal is not None:
            return caller.refusal, False
        if self._faults.in_downtime():
            return Response.error(503, self._faults.error_text(_STATUS_TEXT[503])), False
        fault, latency_s = self._faults.decide(route.name, _resource(route, request, params))
        if latency_s > 0:
            self._stop.wait(latency_s)
        if fault is not None and fault.kind == "stall":
            return self._stall(fault, ip), True
        if fault is not None and fault.kind == "status":
            text = self._faults.error_text(_STATUS_TEXT.get(fault.status, "Error"))
            return Response.error(fault.status, text), False
        response = self._respond(route, request, params, caller)
        if route.name == "body":
            self._stats.body(int(params["killmail_id"]), response.status)
        return _corrupt(_conditional(response, request), fault), False

    def _stall(self, fault: Fault, ip: str) -> Response:
        # The client times out long before the answer: ESI counts that as an error now.
        self._stats.stall()
        self._errors.record(ip, 504)
        self._stop.wait(fault.stall_s)
        return Response.error(504, self._faults.error_text(_STATUS_TEXT[504]))

    def _respond(
        self, route: Route, request: Request, params: dict[str, str], caller: Caller
    ) -> Response:
        try:
            status, body, headers = self._dispatch(route, request, params, caller)
        except Exception:  # a simulator bug must show as a 500, not a dropped connection
            log.exception("simulator error on %s %s", request.method, request.path)
            self._stats.internal_error()
            return Response.error(500, "Internal Server Error (simulator bug)")
        return Response(status, body, headers)

    def _dispatch(
        self, route: Route, request: Request, params: dict[str, str], caller: Caller
    ) -> Answer:
        d = self._data
        handlers: dict[str, Callable[[], Answer]] = {
            "list": lambda: d.recent(int(params["character_id"]), request.param("page")),
            "corp_list": lambda: d.corporation_recent(
                int(params["corporation_id"]), caller.character_id, request.param("page")
            ),
            "roles": lambda: d.roles(int(params["character_id"])),
            "body": lambda: d.killmail(int(params["killmail_id"]), params["killmail_hash"]),
            "names": lambda: d.names(request.body),
            "affiliation": lambda: d.affiliation(request.body),
            "market_history": lambda: d.market_history(
                int(params["region_id"]), request.param("type_id")
            ),
            "market_prices": d.market_prices,
            "status": d.status,
        }
        if route.name in handlers:
            return handlers[route.name]()
        return d.entity(route.name, int(next(iter(params.values()))))


def _resource(route: Route, request: Request, params: dict[str, str]) -> Hashable:
    """What a fault decision is keyed by: the killmail, the list page, else the path."""
    if route.name == "body":
        return int(params["killmail_id"])
    if route.name in ("list", "corp_list"):
        page = request.param("page") or "1"
        owner = int(params.get("character_id") or params["corporation_id"])
        return (owner, int(page) if page.isdigit() else page)
    return request.path


def _conditional(response: Response, request: Request) -> Response:
    """304 without a body when ``If-None-Match`` names the current ETag."""
    etag = response.headers.get("ETag")
    wanted = request.header("if-none-match")
    if response.status != 200 or etag is None or wanted is None:
        return response
    tags = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    if etag in tags or "*" in tags:
        headers = {k: v for k, v in response.headers.items() if k != "Content-Type"}
        return Response(304, b"", headers)
    return response


def _corrupt(response: Response, fault: Fault | None) -> Response:
    if fault is None or response.status != 200 or not response.body:
        return response
    if fault.kind == "malformed":
        response.body = response.body[: max(1, len(response.body) * 2 // 3)]
    elif fault.kind == "truncated":
        response.truncate = True
    elif fault.kind == "pages":
        response.headers["X-Pages"] = fault.pages
    return response
