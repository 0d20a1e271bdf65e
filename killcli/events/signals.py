"""Turning SIGINT and SIGTERM into a stop request for long-running commands.

The first signal sets a :class:`threading.Event` that loops check between waits, so
``watch`` and ``webhooks deliver`` finish what they are doing and exit 0. A second signal
raises ``KeyboardInterrupt`` (exit 130) for a process that does not stop fast enough.
Handlers are installed only for the duration of the ``with`` block, and only in the main
thread (Python allows nothing else); elsewhere the block still works, without handlers.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """A stop event that SIGINT/SIGTERM set; previous handlers are restored on exit."""
    event = stop or threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handle(_signum: int, _frame: FrameType | None) -> None:
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
