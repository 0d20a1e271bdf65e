"""Following `killmail.saved` events live, for ``killsync watch``.

Two sources behind one small interface, :class:`EventSource`:

* :class:`OutboxSource` (embedded default): polls the outbox after a cursor, from the newest
  id (or from the start);
* :class:`BrokerSource` (RabbitMQ): an exclusive, auto-delete, server-named queue bound to
  the fanout exchange, so each watcher gets its own copy and the queue vanishes with it.
  With ``from_start`` the outbox is replayed first; the queue is bound before the replay so
  nothing falls between the two, and duplicates are dropped by id.

:func:`watch` runs the loop: filter, dedupe by id (delivery is at least once), hand each
event to a callback, stop on ``max_events``, ``timeout_s`` or the ``stop`` event (set by
a signal handler, see :mod:`killcli.signals`).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import pika.exceptions

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.db import Database
from killcli.errors import QueueUnavailable
from killcli.events.outbox import EXCHANGE, OutboxEvent, iter_events, latest_event_id
from killcli.events.relay import broker_label, connect, declare_exchange, decode_message
from killcli.events.render import involves
from killcli.sync.events import KILLMAIL_SAVED

POLL_S = 0.5  # outbox poll interval; also the longest a stop request waits
PAGE = 200
DEDUPE_WINDOW = 100_000  # ids remembered to drop redelivered messages


class EventSource(Protocol):
    """Where events come from; ``next_batch`` waits at most ``wait_s`` for some."""

    def next_batch(self, wait_s: float, stop: threading.Event) -> Sequence[OutboxEvent]: ...

    def close(self) -> None: ...


class OutboxSource:
    """Poll the database outbox after a cursor."""

    def __init__(self, db: Database, *, from_start: bool = False, poll_s: float = POLL_S) -> None:
        self._db = db
        self._poll_s = poll_s
        self.cursor = 0 if from_start else latest_event_id(db)

    def next_batch(self, wait_s: float, stop: threading.Event) -> Sequence[OutboxEvent]:
        events = list(iter_events(self._db, self.cursor, PAGE))
        if events:
            self.cursor = events[-1].id
        else:
            stop.wait(min(wait_s, self._poll_s))
        return events

    def close(self) -> None:
        """Nothing to release: the database belongs to the caller."""


class BrokerSource:
    """An exclusive auto-delete queue bound to the events exchange."""

    def __init__(self, broker_url: str, *, exchange: str = EXCHANGE) -> None:
        self._label = broker_label(broker_url)
        self._connection = connect(broker_url)
        try:
            channel = self._connection.channel()
            declare_exchange(channel, exchange)
            declared = channel.queue_declare("", exclusive=True, auto_delete=True)
            queue = str(declared.method.queue)  # server-named: amq.gen-...
            channel.queue_bind(queue, exchange)
            # auto_ack: a watcher is a viewer; a message in flight when it dies is not lost
            # for anyone else (every consumer has its own queue).
            self._messages = channel.consume(queue, auto_ack=True, inactivity_timeout=POLL_S)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise QueueUnavailable(
                f"cannot watch events on RabbitMQ at {self._label}: {type(exc).__name__}"
            ) from None

    def next_batch(self, wait_s: float, stop: threading.Event) -> Sequence[OutboxEvent]:
        # The generator yields (None, None, None) after POLL_S without a message, which
        # keeps stop requests and timeouts responsive.
        try:
            _method, props, body = next(self._messages)
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise QueueUnavailable(
                f"lost RabbitMQ at {self._label}: {type(exc).__name__}"
            ) from None
        if body is None:
            return []
        event = decode_message(body, props)
        return [] if event is None else [event]

    def close(self) -> None:
        if self._connection.is_open:
            # Already broken: there is nothing left to release.
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                self._connection.close()


class ReplayThenLive:
    """The outbox from the start until it is exhausted, then a live source."""

    def __init__(self, replay: OutboxSource, live: EventSource) -> None:
        self._replay: OutboxSource | None = replay
        self._live = live

    def next_batch(self, wait_s: float, stop: threading.Event) -> Sequence[OutboxEvent]:
        if self._replay is not None:
            events = self._replay.next_batch(0.0, stop)
            if events:
                return events
            self._replay = None
        return self._live.next_batch(wait_s, stop)

    def close(self) -> None:
        self._live.close()


def open_source(
    broker_url: str | None,
    database: Callable[[], Database],
    *,
    from_start: bool = False,
    exchange: str = EXCHANGE,
) -> EventSource:
    """The broker source when ``broker_url`` is an amqp URL, else the outbox.

    ``database`` is only called when the outbox is needed (RabbitMQ without
    ``from_start`` does not touch the database).
    """
    if broker_url is None or not broker_url.startswith(("amqp://", "amqps://")):
        return OutboxSource(database(), from_start=from_start)
    live = BrokerSource(broker_url, exchange=exchange)  # bound before any replay
    if not from_start:
        return live
    try:
        return ReplayThenLive(OutboxSource(database(), from_start=True), live)
    except BaseException:
        live.close()
        raise


class StopReason(StrEnum):
    MAX_EVENTS = "max-events"
    TIMEOUT = "timeout"
    STOPPED = "stopped"


@dataclass(frozen=True)
class WatchResult:
    """How many events were shown, and why watching ended."""

    shown: int
    duplicates: int
    reason: StopReason


class _RecentIds:
    """A bounded set of ids seen, to drop redelivered messages."""

    def __init__(self, size: int = DEDUPE_WINDOW) -> None:
        self._ids: set[int] = set()
        self._order: deque[int] = deque()
        self._size = size

    def add(self, event_id: int) -> bool:
        """True when the id is new."""
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())
        return True


@dataclass(frozen=True)
class WatchOptions:
    character_id: int | None = None
    max_events: int | None = None
    timeout_s: float | None = None
    event_type: str = KILLMAIL_SAVED


def _wanted(event: OutboxEvent, options: WatchOptions) -> bool:
    if event.event_type != options.event_type:
        return False
    return options.character_id is None or involves(event.payload, options.character_id)


def watch(
    source: EventSource,
    on_event: Callable[[OutboxEvent], None],
    options: WatchOptions,
    stop: threading.Event,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> WatchResult:
    """Hand each wanted event to ``on_event`` until max events, timeout or stop."""
    deadline = None if options.timeout_s is None else clock.monotonic() + options.timeout_s
    seen, shown, duplicates = _RecentIds(), 0, 0
    while not stop.is_set():
        wait_s = POLL_S if deadline is None else deadline - clock.monotonic()
        if wait_s <= 0:
            return WatchResult(shown, duplicates, StopReason.TIMEOUT)
        for event in source.next_batch(min(wait_s, POLL_S), stop):
            if not seen.add(event.id):
                duplicates += 1
                continue
            if not _wanted(event, options):
                continue
            on_event(event)
            shown += 1
            if options.max_events is not None and shown >= options.max_events:
                return WatchResult(shown, duplicates, StopReason.MAX_EVENTS)
    return WatchResult(shown, duplicates, StopReason.STOPPED)


def follow(
    broker_url: str | None,
    database: Callable[[], Database],
    on_event: Callable[[OutboxEvent], None],
    options: WatchOptions,
    stop: threading.Event,
    *,
    from_start: bool = False,
    exchange: str = EXCHANGE,
    on_ready: Callable[[str], None] | None = None,
) -> WatchResult:
    """Open the right source, watch until done, close it: ``killsync watch`` in one call.

    ``on_ready`` gets a description of the source once it is listening (the CLI prints
    it on stderr; tests wait for it).
    """
    source = open_source(broker_url, database, from_start=from_start, exchange=exchange)
    try:
        if on_ready is not None:
            rabbit = isinstance(source, BrokerSource | ReplayThenLive)
            on_ready(f"RabbitMQ exchange {exchange}" if rabbit else "the database outbox")
        return watch(source, on_event, options, stop)
    finally:
        source.close()
