"""The outbox relay: unpublished outbox rows to the ``killsync.events`` fanout exchange.

One batch is one database transaction:

1. claim up to ``batch`` rows with ``published_at IS NULL`` in id order, locked: on
   PostgreSQL ``FOR UPDATE SKIP LOCKED`` (a second relay takes the next rows instead of
   waiting), on SQLite the database write lock every killsync transaction takes
   (``BEGIN IMMEDIATE``: a second relay waits, then finds the rows published);
2. publish each as a persistent JSON message with publisher confirms (the broker has
   it on disk when ``basic_publish`` returns);
3. set ``published_at`` and commit.

Delivery guarantee: **at least once**. Two relays never publish the same row in normal
operation, but a relay that dies (or loses the database) between the broker's confirm
and the commit leaves its rows unpublished and they go out again. Every message carries
the outbox id as ``message_id`` (and ``id`` in the body): consumers dedupe on it, as
``killsync watch`` does. Order is id order within a batch; with several relays on
PostgreSQL, batches may interleave.

Message body::

    {"type": "killmail.saved", "id": 123, "payload": {...}}
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.exchange_type import ExchangeType
from sqlalchemy import select, update

from killcli.db import Database
from killcli.db.types import utcnow
from killcli.errors import QueueUnavailable
from killcli.events.outbox import EVENTS, EXCHANGE, OutboxEvent, event_from_row

DEFAULT_BATCH = 200
MAX_BATCHES = 50  # one call relays at most this many batches, then lets its caller work
SOCKET_TIMEOUT_S = 10.0
BLOCKED_CONNECTION_TIMEOUT_S = 30.0  # a broker in flow control (disk/memory alarm)
CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class RelayResult:
    """``published`` messages went out in ``batches`` transactions."""

    published: int
    batches: int


def broker_label(broker_url: str) -> str:
    """``host:port/vhost`` of a broker URL, without user or password (for messages)."""
    parts = urlsplit(broker_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname}{port}{parts.path or '/'}"


def connect(broker_url: str) -> pika.BlockingConnection:
    """A blocking connection with explicit timeouts; ``QueueUnavailable`` when unreachable."""
    params = pika.URLParameters(broker_url)
    params.socket_timeout = SOCKET_TIMEOUT_S
    params.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT_S
    params.connection_attempts = 1
    try:
        return pika.BlockingConnection(params)
    except (pika.exceptions.AMQPError, OSError) as exc:
        # The exception text may carry the URL; name only the host.
        raise QueueUnavailable(
            f"cannot reach RabbitMQ at {broker_label(broker_url)}: {type(exc).__name__}"
        ) from None


def declare_exchange(channel: BlockingChannel, exchange: str = EXCHANGE) -> None:
    """Declare the durable fanout exchange; idempotent (same arguments every time)."""
    channel.exchange_declare(exchange=exchange, exchange_type=ExchangeType("fanout"), durable=True)


def encode_message(event: OutboxEvent) -> tuple[bytes, pika.BasicProperties]:
    """The JSON body and AMQP properties of one event."""
    body = json.dumps(
        {"type": event.event_type, "id": event.id, "payload": event.payload},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    stamp = int(event.created_at.timestamp()) if event.created_at else None
    props = pika.BasicProperties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        message_id=str(event.id),
        type=event.event_type,
        timestamp=stamp,
        app_id="killsync",
    )
    return body, props


def decode_message(body: bytes, props: pika.BasicProperties | None = None) -> OutboxEvent | None:
    """An event from a message body; None for anything that is not one of ours."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("id"), int)
        and isinstance(data.get("type"), str)
        and isinstance(data.get("payload"), dict)
    ):
        return None
    stamp = getattr(props, "timestamp", None)
    created = datetime.fromtimestamp(stamp, tz=UTC) if isinstance(stamp, int) else None
    return OutboxEvent(
        id=data["id"], event_type=data["type"], payload=data["payload"], created_at=created
    )


class EventRelay:
    """A long-lived relay: one connection and confirm-mode channel, reused across calls.

    The worker builds one at start and calls :meth:`relay_pending` after each job and on a
    timer; calls are serialized by a lock (pika connections are not thread-safe). A lost
    connection is reopened on the next call.
    """

    def __init__(self, broker_url: str, *, exchange: str = EXCHANGE) -> None:
        self._url = broker_url
        self.exchange = exchange
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def __repr__(self) -> str:
        return f"EventRelay({broker_label(self._url)!r}, exchange={self.exchange!r})"

    def __enter__(self) -> EventRelay:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def relay_pending(
        self, db: Database, *, batch: int = DEFAULT_BATCH, max_batches: int = MAX_BATCHES
    ) -> RelayResult:
        """Publish unpublished events in batches until none is left (or ``max_batches``)."""
        published = batches = 0
        with self._lock:
            while batches < max_batches:
                count = self._relay_batch(db, batch)
                if count == 0:
                    break
                published, batches = published + count, batches + 1
                if count < batch:
                    break
        return RelayResult(published=published, batches=batches)

    def _relay_batch(self, db: Database, batch: int) -> int:
        claim = (
            select(EVENTS)
            .where(EVENTS.c.published_at.is_(None))
            .order_by(EVENTS.c.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        with db.session() as session:
            events = [event_from_row(row) for row in session.execute(claim)]
            if not events:
                return 0
            self._publish(events)  # raises before the commit: rows stay unpublished
            session.execute(
                update(EVENTS)
                .where(EVENTS.c.id.in_([e.id for e in events]))
                .values(published_at=utcnow())
            )
        return len(events)

    def _publish(self, events: list[OutboxEvent]) -> None:
        channel = self._open()
        try:
            for event in events:
                body, props = encode_message(event)
                channel.basic_publish(self.exchange, "", body, props)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._drop()
            raise QueueUnavailable(
                f"publishing events to RabbitMQ at "
                f"{broker_label(self._url)} failed: "
                f"{type(exc).__name__}"
            ) from None

    def _open(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._drop()
        self._connection = connect(self._url)
        try:
            channel = self._connection.channel()
            channel.confirm_delivery()
            declare_exchange(channel, self.exchange)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._drop()
            raise QueueUnavailable(
                f"RabbitMQ at {broker_label(self._url)} refused the "
                f"events exchange: {type(exc).__name__}"
            ) from None
        self._channel = channel
        return channel

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            # Already broken: there is nothing left to release.
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._drop()


def relay_pending(
    db: Database, broker_url: str, *, batch: int = DEFAULT_BATCH, exchange: str = EXCHANGE
) -> int:
    """Publish every unpublished event once, over a connection opened for this call.

    Returns how many were published. Processes that relay often should keep an
    :class:`EventRelay` instead of reconnecting each time.
    """
    with EventRelay(broker_url, exchange=exchange) as relay:
        return relay.relay_pending(db, batch=batch).published
