"""The one backoff: bounds, the jitter's range, and server waits that win but stay bounded."""

from __future__ import annotations

import math
import random

import pytest
from tenacity import Retrying, retry_if_result, stop_after_attempt

from killcli.backoff import Backoff, tenacity_wait

BACKOFF = Backoff(initial_s=1.0, cap_s=8.0, max_server_s=60.0)


@pytest.mark.parametrize(
    ("failures", "ceiling_s"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]
)
def test_the_ceiling_doubles_up_to_the_cap(failures: int, ceiling_s: float) -> None:
    assert BACKOFF.ceiling_s(failures) == ceiling_s


def test_a_huge_failure_count_stays_at_the_cap() -> None:
    assert BACKOFF.ceiling_s(10**9) == 8.0
    assert Backoff(initial_s=1e-300, cap_s=1e300).ceiling_s(10**9) < 1e300


@pytest.mark.parametrize("failures", [1, 2, 3, 4, 20])
def test_waits_are_jittered_between_half_and_all_of_the_ceiling(failures: int) -> None:
    rng = random.Random(failures)
    ceiling = BACKOFF.ceiling_s(failures)
    waits = {BACKOFF.wait_s(failures, rng.random) for _ in range(200)}
    assert all(ceiling / 2 <= w < ceiling for w in waits)
    assert len(waits) > 150  # jittered, not one value
    assert min(waits) < ceiling * 0.6 and max(waits) > ceiling * 0.9  # the whole range


def test_the_jitter_ends_are_exact() -> None:
    assert BACKOFF.wait_s(3, lambda: 0.0) == 2.0
    assert BACKOFF.wait_s(3, lambda: 0.999999) == pytest.approx(4.0, abs=1e-5)


def test_a_server_wait_wins_over_the_backoff() -> None:
    assert BACKOFF.wait_s(1, lambda: 0.0, server_s=42.0) == 42.0
    assert BACKOFF.wait_s(9, lambda: 0.0, server_s=0.5) == 0.5  # shorter than ours: still


@pytest.mark.parametrize(
    ("server_s", "bounded_s"), [(1e12, 60.0), (math.inf, 60.0), (-5.0, 0.0), (math.nan, 0.0)]
)
def test_a_server_wait_is_bounded(server_s: float, bounded_s: float) -> None:
    assert BACKOFF.wait_s(1, server_s=server_s) == bounded_s


def test_invalid_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(initial_s=10.0, cap_s=1.0)
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(initial_s=-1.0, cap_s=1.0)


def test_as_a_tenacity_wait_the_hint_of_the_failed_attempt_wins() -> None:
    answers = iter([None, 30.0, 1e9, None])
    slept: list[float] = []
    hints: list[float | None] = []

    def attempt() -> float | None:
        hint = next(answers)
        hints.append(hint)
        return hint

    retrying = Retrying(
        stop=stop_after_attempt(4),
        wait=tenacity_wait(BACKOFF, lambda: 0.0, server_s=lambda state: hints[-1]),
        retry=retry_if_result(lambda _r: True),
        sleep=slept.append,
        retry_error_callback=lambda _state: None,
    )
    retrying(attempt)
    assert slept == [0.5, 30.0, 60.0]  # ours (attempt 1), the server's, the server's capped
