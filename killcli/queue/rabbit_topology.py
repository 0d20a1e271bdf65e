"""RabbitMQ topology of a killsync job queue, and connecting to the broker.

Every queue is durable and reached through the default exchange, so there are no
exchanges or bindings to keep in step. For a queue named ``<name>``:

=======================  ===================================================================
queue                    arguments
=======================  ===================================================================
``<name>``               ``x-max-priority = 10``
``<name>.delay.<ms>``    ``x-message-ttl = <ms>``, ``x-dead-letter-exchange = ""``,
                         ``x-dead-letter-routing-key = <name>``; ``<ms>`` is each power of
                         two from 64 (2**6) to 4194304 (2**22, about 70 minutes)
``<name>.dead``          none; each message keeps the job body, the reason is in headers
=======================  ===================================================================

These arguments are a compatibility contract: RabbitMQ refuses (``PRECONDITION_FAILED``)
to redeclare a queue with other arguments, so they must never change for a name that
exists. Declaring is therefore safe to repeat from any process and version. A delay tier's
TTL is part of its name, so a future tier is a new queue, never an altered one; anything
else that must change needs a new queue name (``KILLSYNC_QUEUE_NAME``).

Why one delay queue per tier: a per-message TTL only expires at the head of a queue, so a
long delay would hold back the short ones queued behind it; in a queue whose messages all
share one TTL they expire in order. A retry's (jittered) delay is rounded down to a tier.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from killcli.errors import QueueUnavailable
from killcli.queue.base import MAX_PRIORITY
from killcli.textsafe import mask_url

MIN_TIER_EXP, MAX_TIER_EXP = 6, 22  # delay tiers 64 ms .. 4194304 ms
PRECONDITION_FAILED = 406
PERSISTENT = 2  # AMQP delivery mode: written to disk by durable queues
# What a lost connection or channel looks like; the consumer reconnects on these.
LINK_ERRORS: tuple[type[Exception], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
)
REASON_HEADER = "killsync-reason"
ATTEMPTS_HEADER = "killsync-attempts"
FAILED_AT_HEADER = "killsync-failed-at"


@dataclass(frozen=True)
class Topology:
    """Names and arguments of the queues behind one killsync queue name."""

    name: str

    @property
    def dead(self) -> str:
        return f"{self.name}.dead"

    @property
    def tiers_ms(self) -> tuple[int, ...]:
        return tuple(2**exp for exp in range(MIN_TIER_EXP, MAX_TIER_EXP + 1))

    def delay_queue(self, tier_ms: int) -> str:
        return f"{self.name}.delay.{tier_ms}"

    def tier_for(self, delay_s: float) -> int:
        """The tier a delay goes to: rounded down to a power of two ms, within the tiers."""
        delay_ms = max(1.0, delay_s * 1000)
        exp = min(MAX_TIER_EXP, max(MIN_TIER_EXP, math.floor(math.log2(delay_ms))))
        return int(2**exp)

    def queues(self) -> dict[str, dict[str, Any]]:
        """Every queue with its arguments, the main queue first."""
        declared: dict[str, dict[str, Any]] = {self.name: {"x-max-priority": MAX_PRIORITY}}
        for tier in self.tiers_ms:
            declared[self.delay_queue(tier)] = {
                "x-message-ttl": tier,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.name,
            }
        declared[self.dead] = {}
        return declared

    def declare(self, channel: BlockingChannel) -> None:
        """Declare every queue (idempotent); a queue with other arguments is an error."""
        for queue, arguments in self.queues().items():
            self.declare_one(channel, queue, arguments)

    def declare_one(self, channel: BlockingChannel, queue: str, arguments: dict[str, Any]) -> int:
        """Declare one queue; returns its ready message count."""
        try:
            frame = channel.queue_declare(queue, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != PRECONDITION_FAILED:
                raise
            raise QueueUnavailable(
                f"RabbitMQ queue {queue!r} exists with other arguments than killsync "
                f"declares ({exc.reply_text})",
                hint="delete that queue or choose another KILLSYNC_QUEUE_NAME",
            ) from exc
        return int(frame.method.message_count or 0)

    def counts(self, channel: BlockingChannel) -> tuple[int, int, int, int]:
        """``(ready, consumers, delayed, dead)`` message and consumer counts."""
        main = channel.queue_declare(self.name, durable=True, arguments=self.queues()[self.name])
        delayed = sum(
            self.declare_one(channel, q, args)
            for q, args in self.queues().items()
            if q not in {self.name, self.dead}
        )
        dead = self.declare_one(channel, self.dead, {})
        return (
            int(main.method.message_count or 0),
            int(main.method.consumer_count or 0),
            delayed,
            dead,
        )

    def delete(self, channel: BlockingChannel) -> None:
        """Delete every queue, messages included (tests and decommissioning)."""
        for queue in self.queues():
            channel.queue_delete(queue)


def connect(url: str, *, name: str) -> BlockingConnection:
    """A blocking connection named ``name`` (operators see it in the management UI)."""
    try:
        parameters = pika.URLParameters(url)
    except ValueError as exc:
        raise QueueUnavailable(f"not a usable RabbitMQ URL {mask_url(url)}: {exc}") from exc
    parameters.client_properties = {"connection_name": name, "product": "killsync"}
    try:
        return BlockingConnection(parameters)
    except pika.exceptions.AMQPError as exc:
        raise QueueUnavailable(
            f"cannot reach RabbitMQ at {mask_url(url)}: {describe_amqp(exc)}"
        ) from exc


def close_quietly(connection: BlockingConnection | None) -> None:
    """Close a connection that may already be broken."""
    if connection is None or connection.is_closed:
        return
    with contextlib.suppress(pika.exceptions.AMQPError):  # it was going away anyway
        connection.close()


def describe_amqp(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"


def job_properties(
    job_id: str | None, priority: int, headers: dict[str, Any] | None = None
) -> pika.BasicProperties:
    """Persistent JSON message properties."""
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=PERSISTENT,
        priority=priority,
        message_id=job_id,
        headers=headers,
    )


def publish(
    channel: BlockingChannel, queue: str, body: bytes, properties: pika.BasicProperties
) -> None:
    """Publish with a publisher confirm (the channel is in confirm mode); ``mandatory`` so a
    missing queue raises instead of dropping the message."""
    channel.basic_publish("", queue, body, properties, mandatory=True)
