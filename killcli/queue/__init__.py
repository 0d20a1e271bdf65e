"""The job queue: one small message per character to sync, two interchangeable brokers.

* :class:`~killcli.queue.dbqueue.DatabaseBroker` - the ``jobs`` table (embedded default);
* :class:`~killcli.queue.rabbit.RabbitBroker` - RabbitMQ, with per-character dedupe in
  the database's ``leases`` table (fleets).

:func:`open_broker` picks one from the settings. Both implement
:class:`~killcli.queue.base.Broker`.
"""

from __future__ import annotations

from killcli.config import Settings
from killcli.db import Database
from killcli.queue.base import (
    Broker,
    ConsumeResult,
    DeadLetterInfo,
    Handler,
    Outcome,
    OutcomeKind,
    QueueStats,
    RequeueResult,
)
from killcli.queue.dbqueue import DatabaseBroker
from killcli.queue.jobs import Job, PoisonMessage, decode
from killcli.queue.leases import Leases, character_lease
from killcli.queue.policy import RetryPolicy

__all__ = [
    "Broker",
    "ConsumeResult",
    "DatabaseBroker",
    "DeadLetterInfo",
    "Handler",
    "Job",
    "Leases",
    "Outcome",
    "OutcomeKind",
    "PoisonMessage",
    "QueueStats",
    "RequeueResult",
    "RetryPolicy",
    "character_lease",
    "decode",
    "open_broker",
]


def open_broker(
    settings: Settings, db: Database, *, policy: RetryPolicy | None = None, connect: bool = True
) -> Broker:
    """The broker the settings select: RabbitMQ when ``broker_url`` is an amqp URL, else
    the database queue. With ``connect`` (the default) RabbitMQ is reached now, so an
    unreachable broker fails at startup with one :class:`~killcli.errors.QueueUnavailable`
    line."""
    if settings.uses_rabbitmq:
        assert settings.broker_url is not None
        # pika is imported only by deployments that use it (and keeps `--help` fast).
        from killcli.queue.rabbit import RabbitBroker  # noqa: PLC0415

        broker = RabbitBroker(
            settings.broker_url, db, queue_name=settings.queue_name, policy=policy
        )
        return broker.open() if connect else broker
    return DatabaseBroker(db, queue_name=settings.queue_name, policy=policy)
