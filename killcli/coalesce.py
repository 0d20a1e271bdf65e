"""Group commit: many threads' small database steps run as one batch.

A worker runs dozens of syncs at once; when nothing is new, each one's database work is a
few tiny statements, and one transaction per step per sync is what limits the rate (CPU
and, on SQLite, the one writer at a time). A :class:`Coalescer` lets every thread call
:meth:`~Coalescer.submit` with its item and wait; one of the waiting threads (the leader)
runs everything submitted so far through ``run_batch`` in one go, hands each caller its
own result (or exception), and passes the lead to a thread still waiting. There is no
timer and no extra thread: a lone caller runs its batch of one at once, and batches grow
with the load.

``run_batch`` gets the items in submission order and returns one result per item, in the
same order; an item's result may be an exception, raised in its caller's thread. If
``run_batch`` itself raises, every item of that batch is run again on its own (one bad
item must not fail the others), and each caller gets its own outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

MAX_BATCH = 256

logger = logging.getLogger(__name__)


class _Slot(Generic[In, Out]):
    """One caller's item. Its gate is a lock held from the start: the caller waits by
    acquiring it, and it is released when the result is in or the lead passes to the
    caller (cheaper than an Event, which is a lock, a condition and a list)."""

    __slots__ = ("error", "gate", "item", "lead", "result")

    def __init__(self, item: In) -> None:
        self.item = item
        self.gate = threading.Lock()
        self.gate.acquire()
        self.lead = False
        self.result: Out | None = None
        self.error: BaseException | None = None

    def wait(self) -> None:
        self.gate.acquire()

    def wake(self) -> None:
        self.gate.release()


class Coalescer(Generic[In, Out]):
    """Runs concurrent :meth:`submit` calls in batches through ``run_batch``."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], Sequence[Out | BaseException]],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Slot[In, Out]] = []
        self._leading = False
        self.batches = 0  # figures for benchmarks and tests
        self.items = 0

    def submit(self, item: In) -> Out:
        slot: _Slot[In, Out] = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            slot.lead = not self._leading
            self._leading = True
        if not slot.lead:
            slot.wait()  # our result, or the lead passed to us
        if slot.lead:
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]  # None only if Out allows it

    def _lead(self) -> None:
        """Run one batch (the leader's item is the first of it), then pass the lead on."""
        with self._lock:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
        try:
            self._run(batch)
        finally:
            with self._lock:
                heir = self._waiting[0] if self._waiting else None
                self._leading = heir is not None
                if heir is not None:
                    heir.lead = True
            if heir is not None:
                heir.wake()

    def _run(self, batch: list[_Slot[In, Out]]) -> None:
        self.batches += 1
        self.items += len(batch)
        results: list[Out | BaseException]
        try:
            results = list(self._run_batch([slot.item for slot in batch]))
        except Exception as exc:  # noqa: BLE001 - handed to the callers, raised there
            if len(batch) > 1:
                for slot in batch:  # one at a time: each caller gets its own outcome
                    self._run([slot])
                return
            results = [exc]
        except BaseException as exc:  # e.g. KeyboardInterrupt: no caller may wait forever
            results = [exc] * len(batch)
            self._settle(batch, results)
            raise
        if len(results) != len(batch):
            results = [
                RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
            ] * len(batch)
        self._settle(batch, results)

    @staticmethod
    def _settle(batch: list[_Slot[In, Out]], results: list[Out | BaseException]) -> None:
        for slot, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                slot.error = result
            else:
                slot.result = result
            slot.lead = False
            slot.wake()


class WriteBehind(Generic[In]):
    """Items written in batches by a thread of its own, ``every_s`` after the first of a
    batch was posted; :meth:`post` does not wait.

    For the steps of a finished job that nobody waits for (its run record, its ack): a
    :class:`Coalescer` batches what is waiting at one moment, a few items when hundreds of
    jobs a second finish spread out over time; this batches what came in ``every_s``, and
    no job thread waits or is handed a lead. ``run_batch`` handles its own failures (what
    escapes it is logged and the batch dropped: these steps are redone by the next sync).
    :meth:`close` writes what is left; a process killed before loses at most ``every_s`` of
    items, whose jobs then run again.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], object],
        *,
        every_s: float,
        name: str,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._run_batch = run_batch
        self._every_s = every_s
        self._name = name
        self._max_batch = max_batch
        self._items: list[In] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._writing = threading.Lock()  # one batch at a time, in posting order
        self.batches = 0  # figures for benchmarks and tests
        self.items = 0

    def post(self, item: In) -> None:
        with self._cond:
            self._items.append(item)
            closed = self._closed
            if not closed:
                if self._thread is None:
                    # A daemon: an owner that never closes it must not keep the process.
                    self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                    self._thread.start()
                if len(self._items) == 1 or len(self._items) >= self._max_batch:
                    self._cond.notify()
        if closed:  # a straggler after close(): written at once, in its own thread
            self.flush()

    def flush(self) -> None:
        """Write everything posted so far, in the caller's thread."""
        while self._write_some():
            pass

    def close(self) -> None:
        """Write what is left and stop the thread (posts after this are written at once)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        self.flush()

    def __enter__(self) -> WriteBehind[In]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return  # close() writes the rest
                # Gather for every_s, unless the batch fills first or we are closing.
                self._cond.wait_for(
                    lambda: self._closed or len(self._items) >= self._max_batch, self._every_s
                )
            self._write_some()

    def _write_some(self) -> bool:
        """Write one batch; False if there was nothing to write."""
        with self._writing:
            with self._cond:
                batch = self._items[: self._max_batch]
                del self._items[: self._max_batch]
            if not batch:
                return False
            self.batches += 1
            self.items += len(batch)
            try:
                self._run_batch(batch)
            except Exception:
                logger.exception("%s: a batch of %d could not be written", self._name, len(batch))
            return True
