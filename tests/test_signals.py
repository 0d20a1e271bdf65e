"""SIGINT/SIGTERM become a stop request without a lock in the signal handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from killcli.signals import stop_on_signals
from tests.sim.sim_helpers import REPO


def test_a_signal_while_the_main_thread_holds_the_events_lock_still_stops() -> None:
    """The deadlock a handler calling ``Event.set`` had: the signal arrives inside
    ``Event.wait`` (CPython's ``_cond``), whose lock the main thread then holds."""
    seen: list[tuple[int, int]] = []
    with stop_on_signals(on_signal=lambda signum, count: seen.append((signum, count))) as stop:
        with stop._cond:  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the Python handler runs here, holding the lock
            assert not stop.is_set()  # the watcher thread waits for the lock, not us
        assert stop.wait(5)
    assert seen == [(signal.SIGTERM, 1)]
    assert signal.set_wakeup_fd(-1) == -1  # the previous wakeup fd (none) is back


def test_handlers_and_threads_are_restored() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = threading.active_count()
    with stop_on_signals() as stop:
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    assert not stop.is_set()
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert threading.active_count() == threads


def test_outside_the_main_thread_the_block_works_without_handlers() -> None:
    result: list[bool] = []

    def run() -> None:
        with stop_on_signals() as stop:
            result.append(stop.is_set())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert result == [False]


CHILD = """
import sys, time
from killcli.signals import stop_on_signals
try:
    with stop_on_signals(force=sys.argv[1],
                         on_signal=lambda s, n: print("signal", n, flush=True)) as stop:
        print("ready", flush=True)
        while not stop.wait(0.00001):  # spins through Event.wait's lock all the time
            pass
        print("stopping", flush=True)
        time.sleep(30)  # a slow shutdown: the second signal must end it
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def stopped_child(code: str, *args: str, send_second: bool) -> tuple[int, list[str]]:
    """Run ``code`` (it prints "ready", then "signal N" per signal and "stopping"), send
    it SIGTERM, then SIGINT when ``send_second``; its exit code and its last lines."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "signal 1\n"
        assert proc.stdout.readline() == "stopping\n"
        if send_second:
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out.splitlines()


@pytest.mark.parametrize("force", ["interrupt", "exit"])
def test_a_busy_process_stops_on_the_first_signal_and_leaves_on_the_second(force: str) -> None:
    for _ in range(5):  # the old handler deadlocked on some of these runs
        code, lines = stopped_child(CHILD, force, send_second=True)
        assert code == 130
        expected = {"signal 2", "interrupted"} if force == "interrupt" else {"signal 2"}
        assert set(lines) == expected


CHILD_SECOND_SIGNAL_ELSEWHERE = """
import signal, sys, threading, time
from killcli.signals import stop_on_signals

def signal_this_thread():
    time.sleep(0.3)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # not the main thread

try:
    with stop_on_signals(on_signal=lambda s, n: print("signal", n, flush=True)) as stop:
        print("ready", flush=True)
        stop.wait()
        print("stopping", flush=True)
        threading.Thread(target=signal_this_thread).start()
        time.sleep(30)  # the main thread blocked in one long call
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_a_second_signal_taken_by_another_thread_still_interrupts_the_main_one() -> None:
    """The kernel may deliver a signal to any thread; Python runs the handler in the main
    thread only when its blocking call returns (here in 30 s). The watcher sends it on."""
    code, lines = stopped_child(CHILD_SECOND_SIGNAL_ELSEWHERE, send_second=False)
    assert code == 130
    assert lines == ["signal 2", "interrupted"]
