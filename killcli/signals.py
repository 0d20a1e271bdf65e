"""Turning SIGINT and SIGTERM into a stop request for long-running commands.

The first signal sets a :class:`threading.Event` that loops check between waits, so the
worker, ``watch``, ``webhooks deliver`` and ``sim serve`` finish what they are doing and
exit 0. A second signal ends a process that does not stop fast enough: ``force="interrupt"``
raises ``KeyboardInterrupt`` in the main thread (exit 130, ``finally`` blocks run),
``force="exit"`` leaves at once with exit 130 (a worker's unsettled jobs go back to the
queue).

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock: the one inside ``Event.wait``, or a console's. A handler that set the
event or printed there would wait for itself forever (a worker that ``systemctl stop``
could not stop). So the handler takes no lock: the interpreter's C handler writes the signal
number to a pipe (:func:`signal.set_wakeup_fd`), and a watcher thread reads it, sets the
event and calls ``on_signal``; the Python handler only raises ``KeyboardInterrupt`` on a
second signal.

The kernel may hand a process's signal to any of its threads. Python then runs the handler
in the main thread only once that thread's blocking call returns: a main thread asleep in
``time.sleep(30)`` or a long ``Event.wait`` would not see the second signal for that long.
So on the second signal the watcher sends it again to the main thread itself
(:func:`signal.pthread_kill`), which interrupts the call; the handler raises once, and the
watcher does not count its own copy.

Handlers are installed only for the duration of the ``with`` block, and only in the main
thread (Python allows nothing else); elsewhere the block still works, without handlers.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Literal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WAKE = 0  # not a signal number: tells the watcher thread to end

Force = Literal["interrupt", "exit"]


@contextmanager
def stop_on_signals(
    stop: threading.Event | None = None,
    *,
    force: Force = "interrupt",
    on_signal: Callable[[int, int], None] | None = None,
) -> Iterator[threading.Event]:
    """A stop event that SIGINT/SIGTERM set; previous handlers are restored on exit.

    ``on_signal(signum, count)`` runs in the watcher thread for every stop signal (``count``
    1 for the first), before the event is set and before a second signal's
    ``force="exit"``; it may print.
    """
    event = stop or threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    main_ident = threading.main_thread().ident
    assert main_ident is not None
    received = [0]
    raised = [False]  # the handler raised KeyboardInterrupt (it does so once)
    echoes = [0]  # signals the watcher sent the main thread, not to be counted again

    def handle(_signum: int, _frame: FrameType | None) -> None:
        received[0] += 1  # no lock here: see the module docstring
        if received[0] > 1 and force == "interrupt" and not raised[0]:
            raised[0] = True
            raise KeyboardInterrupt

    def watch() -> None:
        count = 0
        while True:
            data = os.read(read_fd, 64)
            for signum in data:
                if signum == _WAKE:
                    return
                if signum not in STOP_SIGNALS:
                    continue
                if echoes[0]:
                    echoes[0] -= 1
                    continue
                count += 1
                if on_signal is not None:
                    on_signal(signum, count)
                event.set()
                if count > 1 and force == "exit":
                    os._exit(130)
                if count == 2 and not raised[0]:  # wake a main thread blocked in a call
                    echoes[0] += 1
                    signal.pthread_kill(main_ident, signum)

    watcher = threading.Thread(target=watch, name="killsync-signals", daemon=True)
    watcher.start()
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield event
    finally:
        os.write(write_fd, bytes([_WAKE]))  # the watcher first: it may signal the main thread
        watcher.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(read_fd)
        os.close(write_fd)
