"""The one clock: the system's, with replaceable parts, and the manual one tests move."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from killcli.clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_the_system_clock_reads_the_host() -> None:
    before = datetime.now(UTC)
    now = SYSTEM_CLOCK.now()
    assert now.tzinfo is UTC and before <= now <= datetime.now(UTC)
    assert abs(SYSTEM_CLOCK.wall() - time.time()) < 5
    first = SYSTEM_CLOCK.monotonic()
    SYSTEM_CLOCK.sleep(0.01)
    assert SYSTEM_CLOCK.monotonic() - first >= 0.01


def test_a_part_of_the_system_clock_can_be_replaced() -> None:
    skewed: Clock = SystemClock(wall=lambda: START.timestamp() + 90)
    assert skewed.now() == START + timedelta(seconds=90)
    assert abs(skewed.monotonic() - time.monotonic()) < 5  # the other parts stay the host's


def test_a_manual_clock_moves_only_when_told() -> None:
    clock: Clock = ManualClock.at(START)
    assert clock.now() == START and clock.monotonic() == 0.0
    assert clock.now() == START  # reading does not move it


def test_sleep_moves_time_and_is_recorded_advance_is_not() -> None:
    clock = ManualClock.at(START)
    clock.sleep(30)
    clock.advance(60)
    clock.sleep(-5)  # a negative sleep is no sleep
    assert clock.monotonic() == 90.0
    assert clock.now() == START + timedelta(seconds=90)
    assert clock.wall() == START.timestamp() + 90
    assert clock.sleeps == [30, -5]


def test_threads_sleeping_together_end_together() -> None:
    clock = ManualClock()
    barrier = threading.Barrier(8)

    def wait_for_the_bucket() -> None:
        clock.monotonic()  # each reads the clock at the same moment, then sleeps
        barrier.wait()
        clock.sleep(900)

    threads = [threading.Thread(target=wait_for_the_bucket) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.monotonic() == 900.0  # not 8 x 900
    assert clock.sleeps == [900] * 8
