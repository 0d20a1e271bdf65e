"""Time as the ESI and SSO layers see it: injectable so tests never really wait.

:class:`Clock` bundles a monotonic clock (for waits and rate-limit windows), a wall clock
(for ``Expires``, ``Last-Modified`` and token expiry) and ``sleep``. Production code uses
``Clock()``; tests and the simulator use :class:`ManualClock`, whose ``sleep`` only moves
time forward.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class Clock:
    """The three time primitives every waiting component takes."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def now(self) -> datetime:
        """The wall clock as a UTC-aware datetime."""
        return datetime.fromtimestamp(self.wall(), tz=UTC)


@dataclass
class ManualClock:
    """A thread-safe fake clock: ``sleep`` advances time instead of blocking.

    Like a real sleep, ``sleep(s)`` ends ``s`` seconds after the sleeping thread last read
    the clock, not ``s`` seconds after whatever another thread already advanced time to:
    eight threads that each wait 900 s for the same bucket end up at +900 s, not +7200 s.
    Every sleep is recorded in ``sleeps`` so tests can assert the waits a component chose.
    """

    start_wall_s: float = 1_750_000_000.0
    _offset_s: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _last_read_s: dict[int, float] = field(default_factory=dict, init=False, repr=False)
    sleeps: list[float] = field(default_factory=list, init=False, repr=False)

    def monotonic(self) -> float:
        with self._lock:
            return self._read()

    def wall(self) -> float:
        with self._lock:
            return self.start_wall_s + self._read()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            start_s = self._last_read_s.get(threading.get_ident(), self._offset_s)
            self._offset_s = max(self._offset_s, start_s + max(0.0, seconds))
            self._read()

    def advance(self, seconds: float) -> None:
        """Move time forward without recording a sleep (the world moving on)."""
        with self._lock:
            self._offset_s += seconds
            self._read()

    def as_clock(self) -> Clock:
        """This fake as the :class:`Clock` the library takes."""
        return Clock(monotonic=self.monotonic, wall=self.wall, sleep=self.sleep)

    def _read(self) -> float:
        self._last_read_s[threading.get_ident()] = self._offset_s
        return self._offset_s
