"""The body fetcher (bounded, oldest sync first) and the in-flight registry, without ESI."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from killcli.sync.fetcher import BodyFetcher, FetcherClosed
from killcli.sync.inflight import Claim, InflightBodies


class Recorder:
    """A fetch function that records what it fetched and how many ran at once."""

    def __init__(self, delay_s: float = 0.0, fail: frozenset[int] = frozenset()) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.order: list[int] = []
        self.lock = threading.Lock()
        self.running = 0
        self.peak_running = 0

    def __call__(self, key: int) -> str:
        with self.lock:
            self.order.append(key)
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            time.sleep(self.delay_s)
            if key in self.fail:
                raise ValueError(f"body {key} is broken")
            return f"body-{key}"
        finally:
            with self.lock:
                self.running -= 1


MakeFetcher = Callable[..., BodyFetcher[int, str]]


@pytest.fixture
def make_fetcher() -> Iterator[Callable[..., BodyFetcher[int, str]]]:
    fetchers: list[BodyFetcher[int, str]] = []

    def make(fetch: Recorder, *, threads: int = 4, per_stream: int = 8) -> BodyFetcher[int, str]:
        fetcher = BodyFetcher(fetch, threads=threads, per_stream=per_stream)
        fetchers.append(fetcher)
        return fetcher

    yield make
    for fetcher in fetchers:
        fetcher.close()


def test_every_key_is_fetched_once_and_errors_reach_the_consumer(make_fetcher: MakeFetcher) -> None:
    fetch = Recorder(fail=frozenset({7, 42}))
    fetcher = make_fetcher(fetch)
    values, errors = {}, {}
    with fetcher.stream(list(range(100))) as stream:
        for fetched in stream:
            try:
                values[fetched.key] = fetched.result()
            except ValueError as exc:
                errors[fetched.key] = str(exc)
    assert sorted(fetch.order) == list(range(100))
    assert errors == {7: "body 7 is broken", 42: "body 42 is broken"}
    assert values == {k: f"body-{k}" for k in range(100) if k not in (7, 42)}
    assert fetch.peak_running <= 4


def test_a_slow_consumer_holds_at_most_per_stream_bodies(make_fetcher: MakeFetcher) -> None:
    fetch = Recorder()
    fetcher = make_fetcher(fetch, threads=4, per_stream=5)
    consumed = 0
    with fetcher.stream(list(range(200))) as stream:
        for _ in stream:
            consumed += 1
            time.sleep(0.001)
            with fetch.lock:
                started = len(fetch.order)
            # what was started but not yet consumed is bounded, whatever the list's length
            assert started - consumed <= 5
    assert consumed == 200
    assert stream.peak_held <= 5


def test_threads_serve_the_oldest_stream_first(make_fetcher: MakeFetcher) -> None:
    fetch = Recorder(delay_s=0.001)
    fetcher = make_fetcher(fetch, threads=1, per_stream=1000)
    with fetcher.stream(list(range(50))) as older, fetcher.stream(list(range(1000, 1050))) as newer:
        assert [f.key for f in older] == list(range(50))
        assert [f.key for f in newer] == list(range(1000, 1050))
    # the newer stream only started once the older one had nothing left to hand out
    assert fetch.order == [*range(50), *range(1000, 1050)]


def test_a_stream_at_its_bound_lets_the_next_stream_through(make_fetcher: MakeFetcher) -> None:
    fetch = Recorder()
    fetcher = make_fetcher(fetch, threads=2, per_stream=3)
    with fetcher.stream(list(range(100))) as stalled, fetcher.stream([500, 501]) as other:
        # nobody consumes `stalled`: it stops at 3 held bodies, and `other` still completes
        assert sorted(f.key for f in other) == [500, 501]
        assert stalled.held == 3
        with fetch.lock:
            assert len([k for k in fetch.order if k < 100]) == 3


def test_leaving_a_stream_early_stops_its_fetches(make_fetcher: MakeFetcher) -> None:
    fetch = Recorder(delay_s=0.002)
    fetcher = make_fetcher(fetch, threads=2, per_stream=4)
    with fetcher.stream(list(range(1000))) as stream:
        for fetched in stream:
            if fetched.key >= 3:
                break
    time.sleep(0.05)
    with fetch.lock:
        assert len(fetch.order) < 20
    assert len(fetcher) == 0


def test_closing_the_fetcher_wakes_a_waiting_consumer(make_fetcher: MakeFetcher) -> None:
    gate = threading.Event()

    def blocked(key: int) -> str:
        gate.wait(5)
        return str(key)

    fetcher = BodyFetcher(blocked, threads=1, per_stream=2)
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            with fetcher.stream([1, 2, 3]) as stream:
                list(stream)
        except FetcherClosed as exc:
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.05)
    closer = threading.Thread(target=fetcher.close)
    closer.start()
    consumer.join(5)
    gate.set()
    closer.join(5)
    assert not consumer.is_alive() and not closer.is_alive()
    assert len(outcome) == 1
    with pytest.raises(FetcherClosed):
        fetcher.stream([4])


def test_an_empty_stream_yields_nothing(make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher(Recorder())
    with fetcher.stream([]) as stream:
        assert list(stream) == []


class Blocks:
    """A stream's source: ``blocks`` one call at a time, recording which thread asked and
    what had been fetched by then."""

    def __init__(self, blocks: list[list[int]], fetch: Recorder, fail_at: int | None = None):
        self.blocks = list(blocks)
        self.fetch = fetch
        self.fail_at = fail_at
        self.calls = 0
        self.fetched_before: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self) -> list[int]:
        self.threads.add(threading.current_thread().name)
        with self.fetch.lock:
            self.fetched_before.append(list(self.fetch.order))
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("the database is down")
        return self.blocks.pop(0) if self.blocks else []


def test_a_source_is_asked_for_its_blocks_at_the_stream_s_turn(make_fetcher: MakeFetcher) -> None:
    """A stream opened with a source claims nothing until the threads come to it: behind
    an older stream, its first block is asked for only once the older stream's keys are
    all handed out; its blocks come on fetcher threads, and it ends when the source has
    no more."""
    fetch = Recorder(delay_s=0.001)
    fetcher = make_fetcher(fetch, threads=1, per_stream=1000)
    source = Blocks([[1000, 1001], [1002], [1003, 1004]], fetch)
    with fetcher.stream(list(range(20))) as older, fetcher.stream([], more=source) as newer:
        assert [f.key for f in older] == list(range(20))
        assert [f.result() for f in newer] == [f"body-{k}" for k in range(1000, 1005)]
    assert source.calls == 4  # three blocks, then the empty answer that ends the stream
    assert len(source.fetched_before[0]) >= 19  # the older stream's keys were all started
    assert all(name.startswith("killsync-body") for name in source.threads)
    assert fetch.order == [*range(20), *range(1000, 1005)]


def test_a_younger_source_waits_while_an_older_stream_claims_its_next_block(
    make_fetcher: MakeFetcher,
) -> None:
    """A thread with nothing to fetch while the oldest stream's source runs waits for its
    keys: it does not claim the next sync's first block meanwhile."""
    asking, release = threading.Event(), threading.Event()

    def slow_source() -> list[int]:
        asking.set()
        release.wait(5)
        return []

    fetch = Recorder()
    fetcher = make_fetcher(fetch, threads=2, per_stream=8)
    younger = Blocks([[100, 101]], fetch)
    with fetcher.stream([], more=slow_source) as older:
        assert asking.wait(5)
        with fetcher.stream([], more=younger) as newer:
            time.sleep(0.1)  # the second thread is free all along
            assert younger.calls == 0
            release.set()
            assert list(older) == []
            assert sorted(f.key for f in newer) == [100, 101]
    assert younger.calls == 2


def test_a_failing_source_reaches_the_consumer_after_the_fetches_before_it(
    make_fetcher: MakeFetcher,
) -> None:
    fetch = Recorder()
    fetcher = make_fetcher(fetch, threads=2, per_stream=4)
    source = Blocks([[1, 2], [3]], fetch, fail_at=3)
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="database is down"), fetcher.stream([], source) as s:
        seen.extend(f.key for f in s)
    assert sorted(seen) == [1, 2, 3]


def test_closing_a_stream_waits_for_its_source_and_asks_it_no_more(
    make_fetcher: MakeFetcher,
) -> None:
    """A sync that leaves its stream knows every block its source returned: the close
    waits for a source that is running, and no thread asks it again."""
    asking, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_source() -> list[int]:
        calls.append(len(calls))
        asking.set()
        release.wait(5)
        return [len(calls)]

    fetcher = make_fetcher(Recorder(), threads=1, per_stream=4)
    stream = fetcher.stream([], more=slow_source)
    assert asking.wait(5)
    closed = threading.Event()

    def close() -> None:
        fetcher.close_stream(stream)
        closed.set()

    closer = threading.Thread(target=close)
    closer.start()
    time.sleep(0.05)
    assert not closed.is_set()  # the source still runs
    release.set()
    closer.join(5)
    assert closed.is_set()
    time.sleep(0.05)
    assert calls == [0]


def test_a_fetcher_is_backlogged_when_the_open_streams_hold_a_round_of_work(
    make_fetcher: MakeFetcher,
) -> None:
    gate = threading.Event()

    def blocked(key: int) -> str:
        gate.wait(5)
        return str(key)

    fetcher = BodyFetcher(blocked, threads=2, per_stream=8)
    try:
        assert not fetcher.backlogged()
        with fetcher.stream([1, 2, 3]):
            time.sleep(0.05)  # two in flight, one to hand out: less than a round
            assert not fetcher.backlogged()
            with fetcher.stream([4, 5]):
                assert fetcher.backlogged()  # three keys to hand out, two threads
            gate.set()
    finally:
        gate.set()
        fetcher.close()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        BodyFetcher(Recorder(), threads=0, per_stream=1)


# -- the in-flight registry ----------------------------------------------------------------


def test_a_second_claim_gets_the_first_owner_and_its_failures() -> None:
    registry = InflightBodies()
    first, second = Claim(), Claim()
    mine, theirs = registry.claim(first, [1, 2, 3])
    assert (mine, theirs) == ([1, 2, 3], {})
    mine, theirs = registry.claim(second, [2, 3, 4])
    assert mine == [4]
    assert theirs == {2: first, 3: first}
    assert not first.wait(0)

    registry.settle(first, [1, 2, 3], {3: "HTTP 422"})
    assert first.wait(0)
    assert first.failure(2) is None
    assert first.failure(3) == "HTTP 422"
    assert len(registry) == 1  # only the second claim's id is still in flight
    registry.settle(second, [4], {})
    assert len(registry) == 0


def test_waiters_wake_when_the_owner_settles() -> None:
    registry = InflightBodies()
    owner = Claim()
    registry.claim(owner, [10])
    woke = threading.Event()

    def waiter() -> None:
        _, theirs = registry.claim(Claim(), [10])
        theirs[10].wait(5)
        woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.02)
    assert not woke.is_set()
    registry.settle(owner, [10], {})
    thread.join(5)
    assert woke.is_set()
