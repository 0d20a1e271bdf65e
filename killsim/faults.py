"""Fault injection: the scenario's random faults and the ones a test asks for.

Random faults are deterministic per resource: the decision for the n-th request of a
killmail body (or of one list page) hashes (seed, fault kind, route, resource, n), so it
does not depend on the order in which concurrent clients happen to ask.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal

from killsim.clock import Clock
from killsim.scenario import FaultPlan

FaultKind = Literal["status", "malformed", "truncated", "stall", "pages"]
_SERVER_ERRORS = (500, 502, 503, 504)


@dataclass(frozen=True)
class Fault:
    """One fault to apply to one request."""

    kind: FaultKind
    status: int = 0
    stall_s: float = 0.0
    pages: str = ""  # kind "pages": the X-Pages header to send instead of the true one


class Faults:
    """Decides the faults of each ESI request; tests add their own with the methods."""

    def __init__(
        self,
        plan: FaultPlan,
        seed: int,
        clock: Clock,
        refresh_list: Callable[[int], None],
        refresh_corporation_list: Callable[[int], None] | None = None,
    ) -> None:
        self._plan = plan
        self._seed = seed
        self._clock = clock
        self._refresh_list = refresh_list
        self._refresh_corporation_list = refresh_corporation_list
        self._lock = threading.Lock()
        self._forced: dict[tuple[str, Hashable], deque[Fault]] = {}
        self._attempts: Counter[tuple[str, Hashable]] = Counter()
        self._sso_failures: deque[int] = deque()
        self._jwks_status: int | None = None
        self._withheld_scopes: dict[int | None, frozenset[str]] = {}
        self._downtime: tuple[float, float] | None = None
        self.anchor(clock.monotonic())

    def anchor(self, origin_s: float) -> None:
        """Count the scenario's downtime window from ``origin_s`` (the server's start)."""
        window = self._plan.downtime_s
        if window is not None:
            with self._lock:
                self._downtime = (origin_s + window[0], origin_s + window[1])

    # -- what tests call ---------------------------------------------------------------

    def _force(self, route: str, key: Hashable, fault: Fault, times: int) -> None:
        with self._lock:
            self._forced.setdefault((route, key), deque()).extend([fault] * times)

    def fail_body(self, killmail_id: int, *, status: int = 500, times: int = 1) -> None:
        """The next ``times`` requests for this body answer ``status`` (e.g. 422, 500)."""
        self._force("body", killmail_id, Fault("status", status), times)

    def malformed_body(self, killmail_id: int, *, times: int = 1) -> None:
        """The next ``times`` answers for this body are 200 with broken JSON."""
        self._force("body", killmail_id, Fault("malformed"), times)

    def truncated_body(self, killmail_id: int, *, times: int = 1) -> None:
        """The next ``times`` answers for this body stop half-way (connection dropped)."""
        self._force("body", killmail_id, Fault("truncated"), times)

    def stall_body(self, killmail_id: int, *, seconds: float, times: int = 1) -> None:
        """The next ``times`` requests for this body hang ``seconds``, then answer 504."""
        self._force("body", killmail_id, Fault("stall", stall_s=seconds), times)

    def fail_list(
        self, character_id: int, *, page: int = 1, status: int = 500, times: int = 1
    ) -> None:
        """The next ``times`` requests for this list page answer ``status``."""
        self._force("list", (character_id, page), Fault("status", status), times)

    def bogus_pages(self, character_id: int, value: str, *, page: int = 1, times: int = 1) -> None:
        """The next ``times`` answers for this list page carry ``X-Pages: value``."""
        self._force("list", (character_id, page), Fault("pages", pages=value), times)

    def refresh_list(self, character_id: int) -> None:
        """Rebuild the character's list cache now (new ``Last-Modified``, new kills)."""
        self._refresh_list(character_id)

    def fail_corporation_list(
        self, corporation_id: int, *, page: int = 1, status: int = 500, times: int = 1
    ) -> None:
        """The next ``times`` requests for this corporation list page answer ``status``."""
        self._force("corp_list", (corporation_id, page), Fault("status", status), times)

    def refresh_corporation_list(self, corporation_id: int) -> None:
        """Rebuild the corporation's list cache now (new ``Last-Modified``, new kills)."""
        if self._refresh_corporation_list is not None:
            self._refresh_corporation_list(corporation_id)

    def fail_sso(self, *, status: int = 503, times: int = 1) -> None:
        """The next ``times`` token-endpoint requests answer ``status``."""
        with self._lock:
            self._sso_failures.extend([status] * times)

    def fail_jwks(self, status: int | None = 503) -> None:
        """The SSO's key set (``/oauth/jwks``) answers ``status`` until ``fail_jwks(None)``."""
        with self._lock:
            self._jwks_status = status

    def withhold_scopes(self, *scopes: str, character_id: int | None = None) -> None:
        """Refreshes from now on drop ``scopes`` from the grant (of one character or all),
        as when CCP withdraws a scope; the narrowed grant stays narrowed."""
        with self._lock:
            self._withheld_scopes[character_id] = frozenset(scopes)

    def start_downtime(self, seconds: float) -> None:
        """Every ESI route answers 503 for the next ``seconds``."""
        now_s = self._clock.monotonic()
        with self._lock:
            self._downtime = (now_s, now_s + seconds)

    # -- what the server calls -------------------------------------------------------

    def error_text(self, usual: str) -> str:
        """The text of an injected error answer: the scenario's ``error_message``, else
        ``usual``."""
        return self._plan.error_message or usual

    def in_downtime(self) -> bool:
        """True while the downtime window is open."""
        window = self._downtime
        return window is not None and window[0] <= self._clock.monotonic() < window[1]

    def sso_failure(self) -> int | None:
        """The status of the next forced token-endpoint failure, if any."""
        with self._lock:
            return self._sso_failures.popleft() if self._sso_failures else None

    def jwks_failure(self) -> int | None:
        """The status the key set answers instead of the keys, if any."""
        return self._jwks_status

    def withheld_scopes(self, character_id: int) -> frozenset[str]:
        """The scopes a refresh of this character's grant drops."""
        with self._lock:
            return self._withheld_scopes.get(None, frozenset()) | self._withheld_scopes.get(
                character_id, frozenset()
            )

    def _roll(self, kind: str, route: str, key: Hashable, attempt: int) -> float:
        text = f"{self._seed}|{kind}|{route}|{key}|{attempt}".encode()
        digest = hashlib.blake2b(text, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def decide(self, route: str, key: Hashable) -> tuple[Fault | None, float]:
        """The fault for this request (None: none) and its latency in seconds."""
        with self._lock:
            self._attempts[(route, key)] += 1
            attempt = self._attempts[(route, key)]
            queue = self._forced.get((route, key))
            forced = queue.popleft() if queue else None
        latency_s = self._latency_s(route, key, attempt)
        if forced is not None:
            return forced, latency_s
        return self._random_fault(route, key, attempt), latency_s

    def _latency_s(self, route: str, key: Hashable, attempt: int) -> float:
        plan = self._plan
        if plan.latency_ms <= 0 and plan.jitter_ms <= 0:
            return 0.0
        jitter = (self._roll("jitter", route, key, attempt) * 2 - 1) * plan.jitter_ms
        return max(0.0, plan.latency_ms + jitter) / 1000

    def _random_fault(self, route: str, key: Hashable, attempt: int) -> Fault | None:
        plan = self._plan
        applies = route in plan.routes

        def hit(kind: str, rate: float) -> float | None:
            """The roll when it falls under ``rate`` (no hashing for a zero rate)."""
            if rate <= 0:
                return None
            roll = self._roll(kind, route, key, attempt)
            return roll if roll < rate else None

        if applies and hit("stall", plan.stall_rate) is not None:
            return Fault("stall", stall_s=plan.stall_s)
        roll = hit("5xx", plan.server_error_rate.get(route, 0.0))
        if roll is not None:
            return Fault("status", _SERVER_ERRORS[int(roll * 1e6) % len(_SERVER_ERRORS)])
        if applies and hit("malformed", plan.malformed_rate) is not None:
            return Fault("malformed")
        if applies and hit("truncated", plan.truncated_rate) is not None:
            return Fault("truncated")
        return None
