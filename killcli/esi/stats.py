"""Thread-safe counters of what the ESI client did, for ``stats`` output and the benchmark."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

UNGROUPED = "-"  # routes ESI puts in no rate-limit group (error limit only)


@dataclass(frozen=True)
class StatsSnapshot:
    """Counts since the client was built. ``requests`` is keyed by ``(group, status)``."""

    requests: Mapping[tuple[str, int], int]
    retries: Mapping[str, int]
    transport_errors: Mapping[str, int]
    tokens_spent: Mapping[str, int]

    @property
    def total_requests(self) -> int:
        """Responses received (every attempt, retries included)."""
        return sum(self.requests.values())

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())

    def count_status(self, status: int) -> int:
        """Responses with this status across all groups."""
        return sum(n for (_, code), n in self.requests.items() if code == status)

    @property
    def not_modified(self) -> int:
        return self.count_status(304)

    @property
    def error_limited(self) -> int:
        return self.count_status(420)

    @property
    def rate_limited(self) -> int:
        return self.count_status(429)


class ClientStats:
    """Counters shared by all threads using one client; read with :meth:`snapshot`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._retries: Counter[str] = Counter()
        self._transport_errors: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()

    def record_response(
        self, group: str | None, status: int, *, bucket: str | None, tokens: int
    ) -> None:
        with self._lock:
            self._requests[(group or UNGROUPED, status)] += 1
            if bucket is not None and tokens:
                self._tokens[bucket] += tokens

    def record_retry(self, group: str | None) -> None:
        with self._lock:
            self._retries[group or UNGROUPED] += 1

    def record_transport_error(self, group: str | None) -> None:
        with self._lock:
            self._transport_errors[group or UNGROUPED] += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                requests=MappingProxyType(dict(self._requests)),
                retries=MappingProxyType(dict(self._retries)),
                transport_errors=MappingProxyType(dict(self._transport_errors)),
                tokens_spent=MappingProxyType(dict(self._tokens)),
            )
