"""The header-driven limiter: waits are arithmetic on Limit/Remaining/window, never constants."""

from __future__ import annotations

import threading

import httpx
import pytest

from killcli.errors import EsiUnavailable
from killcli.esi import BucketKey, ManualClock, RateLimiter, WaitEvent
from killcli.esi.ratelimit import Reservation

LIST = "/characters/{id}/killmails/recent"
KILLMAIL = "/killmails/{id}/{hash}"


def bucket_headers(group: str, limit: str, remaining: int, used: int) -> httpx.Headers:
    return httpx.Headers(
        {
            "X-Ratelimit-Group": group,
            "X-Ratelimit-Limit": limit,
            "X-Ratelimit-Remaining": str(remaining),
            "X-Ratelimit-Used": str(used),
        }
    )


def spend_list_page(limiter: RateLimiter, remaining: int, owner: int = 7) -> Reservation:
    reservation = limiter.acquire(LIST, owner)
    limiter.release(
        reservation, status=200, headers=bucket_headers("char-killmail", "30/15m", remaining, 2)
    )
    return reservation


def make(clock: ManualClock, **options: object) -> tuple[RateLimiter, list[WaitEvent]]:
    events: list[WaitEvent] = []
    limiter = RateLimiter(clock=clock, on_wait=events.append, **options)  # type: ignore[arg-type]
    return limiter, events


def test_spends_the_bucket_down_to_the_margin_then_waits_for_the_first_token_back() -> None:
    clock = ManualClock()
    limiter, events = make(clock)
    for n in range(1, 15):  # 14 successes: 28 of 30 tokens, the 2 left are the margin
        spend_list_page(limiter, remaining=30 - 2 * n)
        clock.advance(10)
    assert clock.sleeps == []
    # Now t=140 s; our first 2 tokens were spent at t=0 and come back at t=900.
    reservation = limiter.acquire(LIST, 7)
    assert clock.sleeps == [760.0]
    assert events[0].reason == "bucket"
    assert events[0].message == "waiting 760 s for ESI char-killmail budget (character 7)"
    assert reservation.key == BucketKey("char-killmail", 7)


def test_margin_is_configurable_and_zero_spends_every_token() -> None:
    clock = ManualClock()
    limiter, _ = make(clock, safety_margin_tokens=0)
    for n in range(1, 16):
        spend_list_page(limiter, remaining=30 - 2 * n)
    assert clock.sleeps == []
    limiter.acquire(LIST, 7)
    assert clock.sleeps == [900.0]


def test_buckets_are_per_character() -> None:
    clock = ManualClock()
    limiter, _ = make(clock)
    for n in range(1, 15):
        spend_list_page(limiter, remaining=30 - 2 * n, owner=7)
    spend_list_page(limiter, remaining=28, owner=8)
    assert clock.sleeps == []


def test_tokens_spent_elsewhere_are_reconciled_from_remaining() -> None:
    """Our first answer says 10 of 30 left: 18 tokens went to someone else (another host)."""
    clock = ManualClock()
    limiter, _ = make(clock)
    spend_list_page(limiter, remaining=10)
    (bucket,) = limiter.snapshot().buckets
    assert bucket.available_tokens == 10
    for remaining in (8, 6, 4, 2):
        spend_list_page(limiter, remaining=remaining)
    clock.advance(100)
    limiter.acquire(LIST, 7)
    # Neither our tokens (back at t=900) nor theirs (at the latest one window after the
    # last report, t=900) are back earlier.
    assert clock.sleeps == [800.0]


def test_in_flight_requests_reserve_the_cost_of_a_success() -> None:
    clock = ManualClock()
    limiter, _ = make(clock)
    spend_list_page(limiter, remaining=8)  # others hold 20, we 2
    held = [limiter.acquire(LIST, 7), limiter.acquire(LIST, 7)]  # 8 - 2 - 2 = 4 >= 2 + 2
    assert [r.tokens for r in held] == [2, 2]
    (bucket,) = limiter.snapshot().buckets
    assert (bucket.reserved_tokens, bucket.available_tokens) == (4, 4)
    third = limiter.acquire(LIST, 7)  # 4 free: exactly one more fits above the margin
    assert clock.sleeps == []
    limiter.cancel(third)
    assert limiter.snapshot().buckets[0].reserved_tokens == 4


def test_first_request_of_an_unknown_bucket_is_a_probe_the_others_wait_for() -> None:
    clock = ManualClock()
    limiter, _ = make(clock, in_flight_poll_s=0.01)
    probe = limiter.acquire(KILLMAIL)
    assert probe.probe
    got: list[Reservation] = []
    waiter = threading.Thread(target=lambda: got.append(limiter.acquire(KILLMAIL)))
    waiter.start()
    while not clock.sleeps:  # the second request is parked until the probe is answered
        threading.Event().wait(0.001)
    assert not got
    limiter.release(probe, status=200, headers=bucket_headers("killmail", "3600/15m", 3598, 2))
    waiter.join(timeout=5)
    assert got and not got[0].probe
    assert set(clock.sleeps) == {0.01}


def test_group_learned_from_headers_for_a_route_without_hint() -> None:
    clock = ManualClock()
    limiter, _ = make(clock)
    route = "/universe/types/{id}"
    first = limiter.acquire(route)
    assert first.key is None
    limiter.release(first, status=200, headers=bucket_headers("static-data", "4/1m", 2, 2))
    assert limiter.group_of(route) == "static-data"
    limiter.acquire(route)  # 2 left, the margin: wait for the token back at t=60
    assert clock.sleeps == [60.0]


def test_429_closes_the_bucket_until_retry_after() -> None:
    clock = ManualClock()
    limiter, events = make(clock)
    reservation = limiter.acquire(KILLMAIL)
    limiter.release(
        reservation,
        status=429,
        retry_after_s=41.0,
        headers=bucket_headers("killmail", "3600/15m", 0, 0),
    )
    limiter.acquire(KILLMAIL)
    assert clock.sleeps == [41.0]
    assert events[0].reason == "retry_after"
    # Remaining 0 put all 3600 tokens on someone else; Retry-After says they are back now.
    assert limiter.snapshot().buckets[0].available_tokens == 3598


def test_low_error_limit_pauses_every_route_until_reset() -> None:
    clock = ManualClock()
    limiter, events = make(clock, error_limit_threshold=10)
    for remain in (100, 11, 10):
        reservation = limiter.acquire("/universe/names")
        limiter.release(
            reservation,
            status=404,
            headers=httpx.Headers(
                {"X-ESI-Error-Limit-Remain": str(remain), "X-ESI-Error-Limit-Reset": "37"}
            ),
        )
    assert clock.sleeps == []
    limiter.acquire(KILLMAIL)
    assert clock.sleeps == [38.0]  # the reset plus one second of grace
    assert events[0].message == "waiting 38 s for the ESI error limit to reset"
    assert limiter.snapshot().error_limit_remain == 10


def test_420_pauses_even_with_errors_left_reported() -> None:
    clock = ManualClock()
    limiter, _ = make(clock)
    reservation = limiter.acquire("/status")
    limiter.release(
        reservation,
        status=420,
        headers=httpx.Headers({"X-ESI-Error-Limit-Remain": "50", "X-ESI-Error-Limit-Reset": "12"}),
    )
    limiter.acquire("/status")
    assert clock.sleeps == [13.0]


def test_a_small_error_window_is_not_low_before_errors_happen() -> None:
    """ESI allows 100 errors; a proxy or the simulator may allow 10: half of it is low."""
    clock = ManualClock()
    limiter, _ = make(clock, error_limit_threshold=10)
    for remain in (10, 9, 8, 7, 6, 5):
        reservation = limiter.acquire("/status")
        limiter.release(
            reservation,
            status=404 if remain < 10 else 200,
            headers=httpx.Headers(
                {"X-ESI-Error-Limit-Remain": str(remain), "X-ESI-Error-Limit-Reset": "12"}
            ),
        )
    assert clock.sleeps == []
    limiter.acquire("/status")
    assert clock.sleeps == [13.0]


def test_errors_left_above_threshold_do_not_pause() -> None:
    clock = ManualClock()
    limiter, _ = make(clock)
    reservation = limiter.acquire("/status")
    limiter.release(
        reservation,
        status=404,
        headers=httpx.Headers({"X-ESI-Error-Limit-Remain": "11", "X-ESI-Error-Limit-Reset": "12"}),
    )
    limiter.acquire("/status")
    assert clock.sleeps == []


def test_wait_reason_is_observable_during_a_wait() -> None:
    clock = ManualClock()
    seen: list[str | None] = []
    limiter = RateLimiter(clock=clock, on_wait=lambda _event: seen.append(limiter.wait_reason))
    reservation = limiter.acquire(KILLMAIL)
    limiter.release(
        reservation,
        status=429,
        retry_after_s=41.0,
        headers=bucket_headers("killmail", "3600/15m", 0, 0),
    )
    limiter.acquire(KILLMAIL)
    assert seen == ["waiting 41 s: ESI killmail answered 429, retrying after"]
    assert limiter.wait_reason is None
    snapshot = limiter.snapshot()
    assert snapshot.wait_count == 1
    assert snapshot.waited_s["retry_after"] == 41.0


def test_gives_up_when_esi_asks_for_a_pause_longer_than_max_wait() -> None:
    clock = ManualClock()
    limiter, _ = make(clock, max_wait_s=100.0)
    reservation = limiter.acquire(KILLMAIL)
    limiter.release(
        reservation,
        status=429,
        retry_after_s=3600.0,
        headers=bucket_headers("killmail", "3600/15m", 0, 0),
    )
    with pytest.raises(EsiUnavailable, match="waiting 3600 s"):
        limiter.acquire(KILLMAIL)
    assert clock.sleeps == []


def test_budget_waits_are_never_capped_they_end_within_the_window() -> None:
    clock = ManualClock()
    limiter, _ = make(clock, max_wait_s=100.0)
    for n in range(1, 15):
        spend_list_page(limiter, remaining=30 - 2 * n)
    limiter.acquire(LIST, 7)
    assert clock.sleeps == [900.0]


def test_a_hinted_route_answered_without_bucket_headers_is_not_serialized() -> None:
    clock = ManualClock()
    limiter, _ = make(clock)
    probe = limiter.acquire(KILLMAIL)
    assert probe.probe
    spend = limiter.release(probe, status=200, headers=httpx.Headers())
    assert spend.key is None
    assert limiter.group_of(KILLMAIL) is None
    held = [limiter.acquire(KILLMAIL) for _ in range(5)]  # concurrent, none waits
    assert all(r.key is None for r in held) and clock.sleeps == []


def test_a_5xx_without_headers_proves_nothing_and_the_next_request_probes() -> None:
    clock = ManualClock()
    limiter, _ = make(clock)
    limiter.release(limiter.acquire(KILLMAIL), status=503, headers=httpx.Headers())
    assert limiter.group_of(KILLMAIL) == "killmail"
    assert limiter.acquire(KILLMAIL).probe


def test_a_bucket_smaller_than_margin_plus_cost_is_still_usable() -> None:
    clock = ManualClock()
    limiter, _ = make(clock)
    route = "/tiny/{id}"
    first = limiter.acquire(route, group_hint="tiny")
    limiter.release(first, status=200, headers=bucket_headers("tiny", "3/10s", 1, 2))
    limiter.acquire(route, group_hint="tiny")  # 1 left < 2: wait for our 2 to come back
    assert clock.sleeps == [10.0]


def test_available_tokens_are_what_may_be_spent_beyond_the_margin() -> None:
    """What a worker may spend on other workers' bodies (``killcli.sync.helping``)."""
    clock = ManualClock()
    limiter, _ = make(clock)
    assert limiter.available_tokens(KILLMAIL) is None  # no answer of the bucket yet
    reservation = limiter.acquire(KILLMAIL)
    limiter.release(reservation, status=200, headers=bucket_headers("killmail", "100/15m", 98, 2))
    assert limiter.available_tokens(KILLMAIL) == 98 - 4  # a success (2) and the margin (2)
    held = limiter.acquire(KILLMAIL)  # in flight: its cost is reserved
    assert limiter.available_tokens(KILLMAIL) == 98 - 2 - 4
    limiter.release(
        held, status=429, retry_after_s=30.0, headers=bucket_headers("killmail", "100/15m", 0, 0)
    )
    assert limiter.available_tokens(KILLMAIL) == 0  # closed until Retry-After
    assert limiter.available_tokens(LIST, 7) is None  # another bucket: not known
