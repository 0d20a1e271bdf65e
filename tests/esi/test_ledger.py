"""The egress ledger on SQLite and PostgreSQL, with a manual clock: blocks, expiry, hand-back,
429s and error pauses shared by every process of an egress."""

from __future__ import annotations

import httpx
import pytest

from killcli.db import Database
from killcli.esi import ManualClock, RateLimiter, WaitEvent
from killcli.esi.ledger import (
    ERROR_LIMIT,
    BlockClose,
    EgressLedger,
    Grant,
    Refusal,
    egress_identity,
    egress_totals,
)
from killcli.esi.shared import SharedBudget
from tests.esi.esi_fakes import ServerBuckets

BODY = "/killmails/{id}/{hash}"
LIMIT, WINDOW_S = 60, 10.0


def ledger(db: Database, clock: ManualClock, owner: str, egress: str = "host-a") -> EgressLedger:
    return EgressLedger(db, egress, owner, wall=clock.wall)


def lease(book: EgressLedger, tokens: int = 8, **options: object) -> Grant | Refusal:
    settings: dict[str, object] = {
        "limit_tokens": LIMIT,
        "window_s": WINDOW_S,
        "margin": 2,
        "hold_s": 1.0,
    }
    settings.update(options)
    return book.lease("killmail", tokens=tokens, **settings)  # type: ignore[arg-type]


def test_egress_is_the_setting_else_the_source_address_else_the_host() -> None:
    import socket

    assert egress_identity("nat-eu-1", "10.0.0.2") == "nat-eu-1"
    assert egress_identity(None, "10.0.0.2") == "10.0.0.2"
    assert egress_identity(None, None) == socket.gethostname()


def test_blocks_are_granted_up_to_the_limit_less_the_margin(db: Database) -> None:
    clock = ManualClock()
    book = ledger(db, clock, "p1")
    grants = [lease(book) for _ in range(7)]  # 7 x 8 = 56 <= 60 - 2
    assert all(isinstance(g, Grant) for g in grants)
    refused = lease(book)
    assert isinstance(refused, Refusal) and not refused.closed
    # The first block comes back one hold + one window after it was taken.
    assert refused.until == pytest.approx(clock.wall() + 1.0 + WINDOW_S)
    clock.advance(11.0)
    assert isinstance(lease(book), Grant)


def test_a_closed_block_counts_what_was_spent_until_one_window_after_it(db: Database) -> None:
    clock = ManualClock()
    book = ledger(db, clock, "p1")
    first = lease(book, tokens=50)
    assert isinstance(first, Grant)
    assert isinstance(lease(book, tokens=20), Refusal)
    clock.advance(0.5)
    # 10 of the 50 were spent (last answer now); the other 40 are handed back at once.
    book.close_blocks([BlockClose(first.block_id, 10, clock.wall() + WINDOW_S)])
    assert isinstance(lease(book, tokens=40), Grant)
    refused = lease(book, tokens=20)
    assert isinstance(refused, Refusal)
    assert refused.until == pytest.approx(clock.wall() + WINDOW_S)  # the 10 spent come back


def test_two_processes_share_one_egress_and_see_each_other(db: Database) -> None:
    clock = ManualClock()
    one, two = ledger(db, clock, "p1"), ledger(db, clock, "p2")
    assert isinstance(lease(one, tokens=40), Grant)
    granted = lease(two, tokens=16)
    assert isinstance(granted, Grant) and granted.holders == 1
    refused = lease(two, tokens=8)
    assert isinstance(refused, Refusal) and refused.holders == 1
    other = ledger(db, clock, "p3", egress="host-b")  # another egress: its own budget
    assert isinstance(lease(other, tokens=50), Grant)
    totals = {(t.egress, t.budget): t for t in egress_totals(db, wall=clock.wall)}
    assert totals["host-a", "killmail"].in_use_tokens == 56
    assert totals["host-a", "killmail"].holders == 2
    assert totals["host-b", "killmail"].in_use_tokens == 50


def test_a_429_closes_the_bucket_for_every_process_until_retry_after(db: Database) -> None:
    clock = ManualClock()
    one, two = ledger(db, clock, "p1"), ledger(db, clock, "p2")
    assert isinstance(lease(one), Grant)
    one.block("killmail", clock.wall() + 7)
    refused = lease(two)
    assert isinstance(refused, Refusal) and refused.closed
    assert refused.until == pytest.approx(clock.wall() + 7)
    assert set(two.blocked()) == {"killmail"}
    clock.advance(7.5)
    assert isinstance(lease(two), Grant)
    assert two.blocked() == {}


# -- the process side, through the rate limiter ----------------------------------------------


def ip_bucket(clock: ManualClock) -> ServerBuckets:
    """ESI's per-IP ``killmail`` bucket, as the simulator keeps it."""
    return ServerBuckets(clock, {"killmail": (LIMIT, WINDOW_S)})


def limiter(
    db: Database, clock: ManualClock, owner: str, events: list[WaitEvent] | None = None
) -> RateLimiter:
    shared = SharedBudget(ledger(db, clock, owner), wall=clock.wall, max_block_tokens=8)
    on_wait = None if events is None else events.append
    return RateLimiter(clock=clock, shared=shared, on_wait=on_wait)


def send(gate: RateLimiter, server: ServerBuckets) -> int:
    reservation = gate.acquire(BODY, group_hint="killmail")
    response = server.answer("killmail", "127.0.0.1", lambda: httpx.Response(200))
    gate.release(reservation, status=response.status_code, headers=response.headers)
    return response.status_code


def test_two_processes_on_one_egress_never_overdraw_the_ip_bucket(db: Database) -> None:
    clock = ManualClock()
    server = ip_bucket(clock)
    gates = [limiter(db, clock, "p1"), limiter(db, clock, "p2")]
    for n in range(200):  # 400 tokens through a 60-token window, turn by turn
        send(gates[n % 2], server)
        clock.advance(0.01)
    assert server.refused == 0
    assert server.peak_used[("killmail", "127.0.0.1")] <= LIMIT
    assert clock.monotonic() > 5 * WINDOW_S  # they did wait for the budget


def test_waits_say_the_budget_is_shared(db: Database) -> None:
    clock = ManualClock()
    server = ip_bucket(clock)
    events: list[WaitEvent] = []
    gates = [limiter(db, clock, "p1", events), limiter(db, clock, "p2", events)]
    for n in range(60):
        send(gates[n % 2], server)
    budget_waits = [e for e in events if e.reason == "bucket"]
    assert budget_waits
    assert budget_waits[-1].message.endswith("killmail budget, shared with 1 other worker")


def test_unused_tokens_are_handed_back_when_a_process_stops(db: Database) -> None:
    clock = ManualClock()
    server = ip_bucket(clock)
    first = limiter(db, clock, "p1")
    send(first, server)  # the probe learns the bucket's size; its 2 tokens are booked
    send(first, server)  # leases a block of 4 tokens (2 requests), spends 2
    book = ledger(db, clock, "p2")
    in_use = {t.budget: t.in_use_tokens for t in egress_totals(db, wall=clock.wall)}
    assert in_use["killmail"] == 2 + 4
    first.close()
    in_use = {t.budget: t.in_use_tokens for t in egress_totals(db, wall=clock.wall)}
    assert in_use["killmail"] == 2 + 2  # only what was spent still counts
    assert isinstance(lease(book, tokens=LIMIT - 2 - 4), Grant)


def test_a_429_seen_by_one_process_stops_the_other(db: Database) -> None:
    clock = ManualClock()
    one, two = limiter(db, clock, "p1"), limiter(db, clock, "p2")
    reservation = one.acquire(BODY, group_hint="killmail")
    one.release(
        reservation,
        status=429,
        headers=httpx.Headers(
            {
                "X-Ratelimit-Group": "killmail",
                "X-Ratelimit-Limit": "60/10s",
                "X-Ratelimit-Remaining": "0",
                "X-Ratelimit-Used": "0",
            }
        ),
        retry_after_s=30.0,
    )
    send(two, ip_bucket(clock))  # probe: teaches two the bucket
    before = clock.monotonic()
    send(two, ip_bucket(clock))
    assert clock.monotonic() - before >= 29.0


def test_an_error_limit_pause_stops_every_process_of_the_egress(db: Database) -> None:
    clock = ManualClock()
    events: list[WaitEvent] = []
    one, two = limiter(db, clock, "p1"), limiter(db, clock, "p2", events)
    reservation = one.acquire("/universe/names")
    one.release(
        reservation,
        status=420,
        headers=httpx.Headers({"X-ESI-Error-Limit-Remain": "0", "X-ESI-Error-Limit-Reset": "40"}),
    )
    assert set(ledger(db, clock, "p3").blocked()) == {ERROR_LIMIT}
    two.acquire("/universe/names")  # two never saw an error itself
    assert [e.reason for e in events] == ["error_limit"]
    assert events[0].wait_s == pytest.approx(41.0, abs=0.5)


def test_the_header_still_wins_when_it_says_less_than_the_ledger(db: Database) -> None:
    """Another client on the same IP (outside the ledger) spent the bucket: ESI's report
    says 2 left, so the limiter waits although the ledger has room."""
    clock = ManualClock()
    gate = limiter(db, clock, "p1")
    reservation = gate.acquire(BODY, group_hint="killmail")
    gate.release(
        reservation,
        status=200,
        headers=httpx.Headers(
            {
                "X-Ratelimit-Group": "killmail",
                "X-Ratelimit-Limit": "60/10s",
                "X-Ratelimit-Remaining": "2",
                "X-Ratelimit-Used": "2",
            }
        ),
    )
    gate.acquire(BODY, group_hint="killmail")
    assert clock.sleeps and clock.sleeps[0] > 5.0  # the foreign tokens come back later


def test_a_process_learns_the_bucket_size_from_the_ledger_and_sends_no_probe(db: Database) -> None:
    """A probe is paid from no block: only the first process of an egress sends one."""
    clock = ManualClock()
    server = ip_bucket(clock)
    first = limiter(db, clock, "p1")
    send(first, server)
    second = limiter(db, clock, "p2")
    reservation = second.acquire(BODY, group_hint="killmail")
    assert not reservation.probe
    assert reservation.block is not None  # paid from a block of the shared budget
