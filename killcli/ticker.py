"""A heartbeat: call a function every few seconds on a thread of its own.

Leases, job visibility, body claims, the egress ledger and the worker's status row are
all kept alive by one of these.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger(__name__)


class Ticker:
    """Calls ``tick`` every ``interval_s`` on a thread of its own, for heartbeats.

    A failing tick is logged and retried on the next interval: a heartbeat that misses
    once is harmless as long as the lease it extends is a few intervals long.
    """

    def __init__(self, interval_s: float, tick: Callable[[], object], name: str) -> None:
        self._interval_s = interval_s
        self._tick = tick
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Ticker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start ticking (once); :meth:`stop` ends it."""
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and wait for a tick in progress to end."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                self._tick()
            except Exception:  # the next tick tries again; see the class docstring
                logger.warning("heartbeat failed", exc_info=True)
