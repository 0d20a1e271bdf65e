"""Killmail bodies being fetched right now in this process, shared by concurrent syncs.

Bodies are immutable, so two syncs whose characters received the same killmail (a fleet
fight) must not both fetch it: the second waits for the first and reuses its outcome.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future


class InflightBodies:
    """A registry of body fetches in progress: killmail id -> future of its body."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[int, Future[None]] = {}

    def claim(self, killmail_id: int) -> tuple[bool, Future[None]]:
        """(True, new future) when the caller must fetch; (False, theirs) to wait on.

        The owner resolves the future once the body is saved (or fails, when it is pending).
        """
        with self._lock:
            existing = self._futures.get(killmail_id)
            if existing is not None:
                return False, existing
            future: Future[None] = Future()
            self._futures[killmail_id] = future
            return True, future

    def release(self, killmail_id: int) -> None:
        """Forget a finished fetch (after its body is saved or recorded as pending)."""
        with self._lock:
            self._futures.pop(killmail_id, None)
