"""Time for the simulator: a real clock, or a manual one that tests move by hand.

Everything time-dependent in the simulator (token buckets, caches, token expiry, the
90-day window, downtime) reads one :class:`Clock`, so a test can jump fifteen minutes
without sleeping and still talk to the server over real HTTP.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of time: monotonic seconds for intervals, UTC wall time for data."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""

    def now(self) -> datetime:
        """The current UTC time (timezone-aware)."""


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when :meth:`advance` is called (thread-safe)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._start = (start or datetime.now(UTC)).astimezone(UTC)
        self._elapsed_s = 0.0

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed_s

    def now(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=self._elapsed_s)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backward)."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._elapsed_s += seconds
