"""Fetch killmail bodies for every sync of a process on one set of threads.

Each sync opens a :class:`FetchStream` over the bodies it needs and iterates the results.
The fetcher's threads always serve the **oldest** stream that may take more work, so
concurrent syncs finish one after another instead of all at once: while the oldest
fetches bodies, the next ones walk their lists, and the body budget is never left idle
while every sync walks at the same time.

Memory is bounded by the fetcher, not by the length of anyone's list: a stream holds at
most ``per_stream`` bodies in flight or finished-but-not-yet-consumed. A stream whose
consumer falls behind (saving a batch) stops getting work, and the threads go on with
the next stream. A sync that claims its bodies a block at a time extends its stream as it
goes (:meth:`FetchStream.extend`).
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

    def __init__(self, fetcher: BodyFetcher[K, T], keys: Sequence[K], lock: threading.Lock) -> None:
        self._fetcher = fetcher
        self.has_ready = threading.Condition(lock)
        self.keys = list(keys)
        self.next = 0  # index of the next key a thread takes
        self.in_flight = 0
        self.ready: deque[Fetched[K, T]] = deque()
        self.closed = False
        self.peak_held = 0  # the most bodies it held at once (in flight + ready)

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
        taken = 0
        while taken < len(self.keys):  # the consumer may extend the stream meanwhile
            yield self._fetcher.take(self)
            taken += 1


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

    def stream(self, keys: Sequence[K]) -> FetchStream[K, T]:
        """Start fetching ``keys`` (in order, as threads become free); use ``with``."""
        stream = FetchStream(self, keys, self._lock)
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
            self._has_work.notify(len(keys))
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

    def take(self, stream: FetchStream[K, T]) -> Fetched[K, T]:
        """The stream's next finished fetch, waiting for one if needed."""
        with self._lock:
            while not stream.ready:
                if self._closed:
                    raise FetcherClosed("the body fetcher was closed while a sync waited")
                stream.has_ready.wait()
            fetched = stream.ready.popleft()
            self._has_work.notify()  # the stream may take more work now
            return fetched

    def close_stream(self, stream: FetchStream[K, T]) -> None:
        """Fetch no more for this stream (its sync is done or gave up)."""
        with self._lock:
            stream.closed = True
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
            stream, key = work
            try:
                fetched: Fetched[K, T] = Fetched(key, self._fetch(key), None)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, like a Future
                fetched = Fetched(key, None, exc)
            with self._lock:
                stream.in_flight -= 1
                if not stream.closed:
                    stream.ready.append(fetched)
                    stream.has_ready.notify()

    def _next_work(self) -> tuple[FetchStream[K, T], K] | None:
        with self._lock:
            while not self._closed:
                for stream in self._open:
                    if stream.next < len(stream.keys) and stream.held < self._per_stream:
                        key = stream.keys[stream.next]
                        stream.next += 1
                        stream.in_flight += 1
                        stream.peak_held = max(stream.peak_held, stream.held)
                        return stream, key
                self._has_work.wait()
            return None
