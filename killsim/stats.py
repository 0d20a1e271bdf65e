"""Thread-safe counters of what clients did to the simulator, and frozen snapshots."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class StatsSnapshot:
    """Counters at one moment. ``requests`` is keyed by (route template, status)."""

    requests: Mapping[tuple[str, int], int]
    body_fetches: Mapping[int, int]
    bodies_served: Mapping[int, int]
    tokens_spent: Mapping[str, Mapping[str, int]]
    tokens_in_use: Mapping[str, Mapping[str, int]]
    peak_concurrent: int
    without_compatibility_date: int
    without_user_agent: int
    stalls: int
    internal_errors: int

    @property
    def total(self) -> int:
        """Every request counted."""
        return sum(self.requests.values())

    def count(self, route: str | None = None, status: int | None = None) -> int:
        """Requests to a route template (``None``: any) with a status (``None``: any)."""
        return sum(
            n
            for (r, s), n in self.requests.items()
            if (route is None or r == route) and (status is None or s == status)
        )

    @property
    def not_modified(self) -> int:
        """Answers with status 304."""
        return self.count(status=304)

    @property
    def error_limited(self) -> int:
        """Answers with status 420."""
        return self.count(status=420)

    @property
    def rate_limited(self) -> int:
        """Answers with status 429."""
        return self.count(status=429)

    def tokens_spent_in(self, group: str) -> int:
        """Tokens charged in a rate-limit group since the start (or the last reset)."""
        return sum(self.tokens_spent.get(group, {}).values())

    @property
    def duplicate_body_fetches(self) -> int:
        """Body requests beyond the first for the same killmail (any status)."""
        return sum(n - 1 for n in self.body_fetches.values() if n > 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (string keys)."""
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), n in sorted(self.requests.items()):
            by_route.setdefault(route, {})[str(status)] = n
        return {
            "total": self.total,
            "requests": by_route,
            "not_modified": self.not_modified,
            "rate_limited": self.rate_limited,
            "error_limited": self.error_limited,
            "body_fetches": {str(k): v for k, v in sorted(self.body_fetches.items())},
            "duplicate_body_fetches": self.duplicate_body_fetches,
            "tokens_spent": {g: dict(v) for g, v in self.tokens_spent.items()},
            "tokens_in_use": {g: dict(v) for g, v in self.tokens_in_use.items()},
            "peak_concurrent": self.peak_concurrent,
            "without_compatibility_date": self.without_compatibility_date,
            "without_user_agent": self.without_user_agent,
            "stalls": self.stalls,
            "internal_errors": self.internal_errors,
        }


class Stats:
    """Counters updated by the server's handler threads."""

    def __init__(self, tokens_in_use: Callable[[], dict[str, dict[str, int]]]) -> None:
        self._lock = threading.Lock()
        self._tokens_in_use = tokens_in_use
        self._reset()

    def _reset(self) -> None:
        self._requests: Counter[tuple[str, int]] = Counter()
        self._body_fetches: Counter[int] = Counter()
        self._bodies_served: Counter[int] = Counter()
        self._tokens: dict[str, Counter[str]] = {}
        self._in_flight = 0
        self._peak = 0
        self._no_date = 0
        self._no_agent = 0
        self._stalls = 0
        self._internal_errors = 0

    def reset(self) -> None:
        """Start counting from zero (the peak restarts from what is in flight now)."""
        with self._lock:
            in_flight = self._in_flight
            self._reset()
            self._in_flight = self._peak = in_flight

    def started(self, *, has_date: bool, has_agent: bool) -> None:
        """A request arrived (what it sent is noted)."""
        with self._lock:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            self._no_date += 0 if has_date else 1
            self._no_agent += 0 if has_agent else 1

    def finished(self, route: str, status: int) -> None:
        """A request was answered."""
        with self._lock:
            self._in_flight -= 1
            self._requests[(route, status)] += 1

    def body(self, killmail_id: int, status: int) -> None:
        """A killmail body was asked for."""
        with self._lock:
            self._body_fetches[killmail_id] += 1
            if status == 200:
                self._bodies_served[killmail_id] += 1

    def tokens(self, group: str, key: str, cost: int) -> None:
        """Tokens charged to a bucket."""
        with self._lock:
            self._tokens.setdefault(group, Counter())[key] += cost

    def internal_error(self) -> None:
        """The simulator itself failed (a bug)."""
        with self._lock:
            self._internal_errors += 1

    def stall(self) -> None:
        """A request was made to hang."""
        with self._lock:
            self._stalls += 1

    def snapshot(self) -> StatsSnapshot:
        """A frozen copy of every counter."""
        in_use = self._tokens_in_use()
        with self._lock:
            return StatsSnapshot(
                requests=MappingProxyType(dict(self._requests)),
                body_fetches=MappingProxyType(dict(self._body_fetches)),
                bodies_served=MappingProxyType(dict(self._bodies_served)),
                tokens_spent=MappingProxyType(
                    {g: MappingProxyType(dict(c)) for g, c in self._tokens.items()}
                ),
                tokens_in_use=MappingProxyType(in_use),
                peak_concurrent=self._peak,
                without_compatibility_date=self._no_date,
                without_user_agent=self._no_agent,
                stalls=self._stalls,
                internal_errors=self._internal_errors,
            )
