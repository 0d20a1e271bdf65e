"""Time, injectable, in one place: every component that reads the time or waits takes a
:class:`Clock`, so tests never really wait and can move time by hand.

A clock has four parts: ``monotonic()`` for elapsed time, waits and rate-limit windows;
``wall()`` (epoch seconds) and ``now()`` (the same as a UTC-aware datetime) for anything
stored or compared with another host (``Expires``, token expiry, leases, webhook rests);
and ``sleep(s)``. Production code uses :data:`SYSTEM_CLOCK`; tests use :class:`ManualClock`,
whose ``sleep`` only moves time forward. (The simulator keeps a clock of its own on purpose:
it must not share the client's code.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What every waiting or time-reading component takes."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def now(self) -> datetime: ...


@dataclass(frozen=True)
class SystemClock:
    """The host's clocks; a part can be replaced (a test's skewed wall clock)."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def now(self) -> datetime:
        """The wall clock as a UTC-aware datetime."""
        return datetime.fromtimestamp(self.wall(), tz=UTC)


SYSTEM_CLOCK: Clock = SystemClock()


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

    @classmethod
    def at(cls, when: datetime) -> ManualClock:
        """A manual clock whose wall clock starts at ``when``."""
        return cls(start_wall_s=when.timestamp())

    def monotonic(self) -> float:
        with self._lock:
            return self._read()

    def wall(self) -> float:
        with self._lock:
            return self.start_wall_s + self._read()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), tz=UTC)

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

    def _read(self) -> float:
        self._last_read_s[threading.get_ident()] = self._offset_s
        return self._offset_s
