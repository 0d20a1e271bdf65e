"""Fetch killmail bodies for every sync of a process on one set of threads.

Each sync opens a :class:`FetchStream` over the bodies it needs and iterates the results.
The fetcher's threads always serve the **oldest** stream that may take more work, so
concurrent syncs finish one after another instead of all at once: while the oldest
fetches bodies, the next ones walk their lists, and the body budget is never left idle
while every sync walks at the same time.

Memory is bounded by the fetcher, not by the length of anyone's list: a stream holds at
most ``per_stream`` bodies in flight or finished-but-not-yet-consumed. A stream whose
consumer falls behind (saving a batch) stops getting work, and the threads go on with
the next stream. A sync that claims its bodies a block at a time gives its stream a source
of keys (``more``): a thread that comes to the stream with every key handed out asks it for
the next block, so a sync waiting behind older ones claims nothing until its turn (what it
has not claimed, workers of other egresses may fetch meanwhile); while an older stream's
source runs, an idle thread waits for those keys instead of asking a younger stream's. A
consumer may also add keys itself (:meth:`FetchStream.extend`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")


class FetcherClosed(RuntimeError):
    """The process is shutting down: no more bodies will be fetched."""


@dataclass(frozen=True, slots=True)
class Fetched(Generic[K, T]):
    """One finished fetch: its value, or the exception it raised."""

    key: K
    value: T | None
    error: BaseException | None

    def result(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class FetchStream(Generic[K, T]):
    """The fetches of one sync; iterate it for every key's :class:`Fetched`, once each."""

    def __init__(
        self,
        fetcher: BodyFetcher[K, T],
        keys: Sequence[K],
        lock: threading.Lock,
        more: Callable[[], Sequence[K]] | None = None,
    ) -> None:
        self._fetcher = fetcher
        self.has_ready = threading.Condition(lock)
        self.keys = list(keys)
        self.next = 0  # index of the next key a thread takes
        self.in_flight = 0
        self.ready: deque[Fetched[K, T]] = deque()
        self.closed = False
        self.peak_held = 0  # the most bodies it held at once (in flight + ready)
        self.more = more  # the next keys, asked for by a thread (None: no more to come)
        self.refilling = False  # a thread is asking ``more``
        self.failure: BaseException | None = None  # what ``more`` raised, for the consumer

    @property
    def finished(self) -> bool:
        """Every key fetched and consumed, and no more to come (or its source failed)."""
        return (
            self.next >= len(self.keys)
            and not self.in_flight
            and not self.ready
            and self.more is None
            and not self.refilling
        )

    @property
    def held(self) -> int:
        return self.in_flight + len(self.ready)

    @property
    def unstarted(self) -> int:
        """Keys no thread has taken yet."""
        with self.has_ready:
            return len(self.keys) - self.next

    def extend(self, keys: Sequence[K]) -> None:
        """Fetch these too, after the keys given so far (iterating yields them as well)."""
        self._fetcher.extend(self, keys)

    def __enter__(self) -> FetchStream[K, T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fetcher.close_stream(self)

    def __iter__(self) -> Iterator[Fetched[K, T]]:
        # The consumer may extend the stream meanwhile, and ``more`` add keys.
        while (fetched := self._fetcher.take(self)) is not None:
            yield fetched


class BodyFetcher(Generic[K, T]):
    """``threads`` daemon threads running ``fetch(key)`` for the open streams, oldest first."""

    def __init__(
        self, fetch: Callable[[K], T], *, threads: int, per_stream: int, name: str = "killsync-body"
    ) -> None:
        if threads < 1 or per_stream < 1:
            raise ValueError("threads and per_stream must be at least 1")
        self._fetch = fetch
        self._per_stream = per_stream
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)  # the threads wait on it
        self._open: list[FetchStream[K, T]] = []  # oldest first
        self._closed = False
        self._name = name
        self._size = threads
        self._threads: list[threading.Thread] = []  # started by the first stream

    def stream(
        self, keys: Sequence[K], more: Callable[[], Sequence[K]] | None = None
    ) -> FetchStream[K, T]:
        """Start fetching ``keys`` (in order, as threads become free), then what ``more``
        returns each time a thread finds them all handed out, until it returns none (it
        runs on a fetcher thread; what it raises reaches the consumer); use ``with``."""
        stream = FetchStream(self, keys, self._lock, more)
        with self._lock:
            if self._closed:
                raise FetcherClosed("the body fetcher is closed")
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._serve, name=f"{self._name}-{n}", daemon=True)
                    for n in range(self._size)
                ]
                for thread in self._threads:
                    thread.start()
            self._open.append(stream)
            self._has_work.notify(len(keys) if more is None else len(keys) + 1)
        return stream

    def extend(self, stream: FetchStream[K, T], keys: Sequence[K]) -> None:
        with self._lock:
            stream.keys.extend(keys)
            self._has_work.notify(len(keys))

    @property
    def per_stream(self) -> int:
        """The most bodies one stream holds at once (in flight or ready)."""
        return self._per_stream

    @property
    def threads(self) -> int:
        return self._size

    def backlogged(self) -> bool:
        """Whether a stream opened now would wait: the open streams that may take work
        have at least a fetch per thread still to hand out (a source counts as a block)."""
        with self._lock:
            queued = sum(
                len(s.keys) - s.next + (self._per_stream if s.more is not None else 0)
                for s in self._open
                if s.held < self._per_stream
            )
        return queued >= self._size

    def take(self, stream: FetchStream[K, T]) -> Fetched[K, T] | None:
        """The stream's next finished fetch, waiting for one if needed; None once it is
        finished. What its source raised is raised here, after the fetches before it."""
        with self._lock:
            while not stream.ready:
                if self._closed:
                    raise FetcherClosed("the body fetcher was closed while a sync waited")
                if stream.finished:
                    if stream.failure is not None:
                        failure, stream.failure = stream.failure, None
                        raise failure
                    return None
                stream.has_ready.wait()
            fetched = stream.ready.popleft()
            self._has_work.notify()  # the stream may take more work now
            return fetched

    def close_stream(self, stream: FetchStream[K, T]) -> None:
        """Fetch no more for this stream (its sync is done or gave up); returns once its
        source is not running (what the sync claimed is then all known to it)."""
        with self._lock:
            stream.closed = True
            stream.more = None
            while stream.refilling:
                stream.has_ready.wait()
            stream.ready.clear()
            if stream in self._open:
                self._open.remove(stream)

    def close(self) -> None:
        """Stop the threads after the fetches they are running; wake waiting syncs."""
        with self._lock:
            self._closed = True
            self._has_work.notify_all()
            for stream in self._open:
                stream.has_ready.notify_all()
        for thread in self._threads:
            thread.join()

    def __len__(self) -> int:
        """Open streams."""
        with self._lock:
            return len(self._open)

    # -- the threads ---------------------------------------------------------------------

    def _serve(self) -> None:
        while (work := self._next_work()) is not None:
            stream, one = work
            if one is None:
                self._refill(stream)
                continue
            (key,) = one
            try:
                fetched: Fetched[K, T] = Fetched(key, self._fetch(key), None)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, like a Future
                fetched = Fetched(key, None, exc)
            with self._lock:
                stream.in_flight -= 1
                if not stream.closed:
                    stream.ready.append(fetched)
                    stream.has_ready.notify()

    def _refill(self, stream: FetchStream[K, T]) -> None:
        """Ask a stream's source for its next keys (outside the lock: it may take a while)."""
        assert stream.more is not None  # only a stream with a source is refilled
        try:
            keys, failure = list(stream.more()), None
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, like a fetch's
            keys, failure = [], exc
        with self._lock:
            stream.refilling = False
            stream.keys.extend(keys)
            if failure is not None or not keys or stream.closed:
                stream.more = None
                stream.failure = failure
            self._has_work.notify(len(keys))
            stream.has_ready.notify_all()  # the consumer, or a close waiting for us

    def _next_work(self) -> tuple[FetchStream[K, T], tuple[K] | None] | None:
        """The oldest stream that may take work, with its next key to fetch (None: the
        stream's keys are all handed out, ask its source for more)."""
        with self._lock:
            while not self._closed:
                older_refilling = False  # its keys come soon: no younger stream claims yet
                for stream in self._open:
                    if stream.held >= self._per_stream:
                        continue
                    if stream.next < len(stream.keys):
                        key = stream.keys[stream.next]
                        stream.next += 1
                        stream.in_flight += 1
                        stream.peak_held = max(stream.peak_held, stream.held)
                        return stream, (key,)
                    if stream.refilling:
                        older_refilling = True
                    elif stream.more is not None and not older_refilling:
                        stream.refilling = True
                        return stream, None
                self._has_work.wait()
            return None
