"""Group commit: concurrent callers share batches, and each gets its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from killcli.coalesce import Coalescer, WriteBehind


def test_a_lone_caller_runs_a_batch_of_one_at_once() -> None:
    seen: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        return [i * 2 for i in items]

    c = Coalescer(run)
    assert c.submit(3) == 6
    assert c.submit(4) == 8
    assert seen == [[3], [4]]


def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    lock = threading.Lock()
    running = 0

    def run(items: Sequence[int]) -> list[int]:
        nonlocal running
        with lock:
            running += 1
            assert running == 1  # one batch at a time
        time.sleep(0.02)  # a transaction: callers pile up meanwhile
        with lock:
            running -= 1
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(run)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(c.submit, range(200)))
    assert results == [i * 10 for i in range(200)]
    assert c.items == 200
    assert c.batches < 200 / 4  # far fewer transactions than callers


def test_an_items_exception_is_raised_in_its_own_caller_only() -> None:
    def run(items: Sequence[int]) -> list[int | BaseException]:
        time.sleep(0.01)
        return [ValueError(f"bad {i}") if i % 3 == 0 else i for i in items]

    c: Coalescer[int, int] = Coalescer(run)

    def call(i: int) -> str:
        try:
            return str(c.submit(i))
        except ValueError as exc:
            return str(exc)

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(call, range(30))) == [
            f"bad {i}" if i % 3 == 0 else str(i) for i in range(30)
        ]


def test_a_failing_batch_is_run_again_item_by_item() -> None:
    """One poisonous item (say, a row that breaks the transaction) fails alone."""
    sizes: list[int] = []

    def run(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.01)
        if 13 in items:
            raise RuntimeError("13 broke the transaction")
        return list(items)

    c: Coalescer[int, int] = Coalescer(run)

    def call(i: int) -> int | str:
        try:
            return c.submit(i)
        except RuntimeError as exc:
            return str(exc)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(40)))
    assert results == [("13 broke the transaction" if i == 13 else i) for i in range(40)]
    assert max(sizes) > 1


def test_a_batch_returning_the_wrong_count_fails_every_caller_and_the_next_one_works() -> None:
    broken = [True]

    def run(items: Sequence[int]) -> list[int]:
        return [] if broken[0] else list(items)

    c: Coalescer[int, int] = Coalescer(run)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        c.submit(1)
    broken[0] = False
    assert c.submit(2) == 2  # the lead was passed on: nobody waits forever


def test_a_base_exception_in_the_leader_releases_the_waiting_callers() -> None:
    release = threading.Event()
    calls = [0]

    def run(items: Sequence[int]) -> list[int]:
        calls[0] += 1
        if calls[0] == 1:
            release.wait(5)
            raise KeyboardInterrupt
        return list(items)

    c: Coalescer[int, int] = Coalescer(run)
    outcomes: list[str] = []

    def call(i: int) -> None:
        try:
            outcomes.append(str(c.submit(i)))
        except KeyboardInterrupt:
            outcomes.append("interrupted")

    first = threading.Thread(target=call, args=(1,))
    first.start()
    time.sleep(0.05)
    others = [threading.Thread(target=call, args=(i,)) for i in (2, 3)]
    for t in others:
        t.start()
    time.sleep(0.05)
    release.set()
    for t in [first, *others]:
        t.join(5)
        assert not t.is_alive()
    assert sorted(outcomes) == ["2", "3", "interrupted"]


def test_write_behind_gathers_what_is_posted_within_its_interval() -> None:
    batches: list[list[int]] = []
    behind: WriteBehind[int] = WriteBehind(
        lambda items: batches.append(list(items)), every_s=0.2, name="test-behind"
    )
    for i in range(5):
        behind.post(i)  # returns at once: nothing written yet
    assert batches == []
    deadline = time.monotonic() + 5
    while not batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batches == [[0, 1, 2, 3, 4]]  # one batch, written by its own thread
    behind.close()
    assert (behind.batches, behind.items) == (1, 5)


def test_write_behind_writes_the_rest_on_close_and_stragglers_at_once() -> None:
    batches: list[list[int]] = []
    behind: WriteBehind[int] = WriteBehind(
        lambda items: batches.append(list(items)), every_s=60.0, name="test-behind", max_batch=3
    )
    for i in range(7):
        behind.post(i)
    behind.close()  # long before the interval: close writes what is left, in order
    assert [i for b in batches for i in b] == list(range(7))
    assert all(len(b) <= 3 for b in batches)
    behind.post(7)  # after close: written in the poster's thread
    assert batches[-1] == [7]


def test_a_write_behind_batch_that_fails_is_logged_and_the_poster_never_sees_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: list[int] = []

    def run(items: Sequence[int]) -> None:
        if 13 in items:
            raise RuntimeError("the database went away")
        written.extend(items)

    behind = WriteBehind(run, every_s=0.01, name="test-behind")
    behind.post(13)
    behind.close()
    behind.post(1)
    assert written == [1]
    assert "a batch of 1 could not be written" in caplog.text
