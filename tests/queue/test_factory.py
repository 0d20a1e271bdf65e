"""Choosing the broker from the settings, and failing fast when it cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from killcli.config import Settings
from killcli.db import Database
from killcli.errors import ExitCode, QueueUnavailable
from killcli.queue import DatabaseBroker, Job, open_broker
from killcli.queue.rabbit import RabbitBroker


def settings(tmp_path: Path, broker_url: str | None) -> Settings:
    return Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'k.db'}",
        broker_url=broker_url,
        queue_name="factory-test",
    )


def test_no_broker_url_means_the_database_queue(tmp_path: Path, db: Database) -> None:
    with open_broker(settings(tmp_path, None), db) as broker:
        assert isinstance(broker, DatabaseBroker)
        assert broker.queue_name == "factory-test"
        assert broker.publish([Job.new(1)]) == 1


def test_an_unreachable_rabbitmq_fails_at_startup_in_one_line(tmp_path: Path, db: Database) -> None:
    url = "amqp://killsync:s3cret@127.0.0.1:1/%2F"  # nothing listens on port 1
    with pytest.raises(QueueUnavailable) as caught:
        open_broker(settings(tmp_path, url), db)
    message = str(caught.value)
    assert message.startswith("cannot reach RabbitMQ at amqp://killsync:***@127.0.0.1:1/%2F")
    assert "s3cret" not in message
    assert "\n" not in message
    assert caught.value.exit_code is ExitCode.QUEUE_UNAVAILABLE


@pytest.mark.rabbitmq
def test_an_amqp_url_means_rabbitmq(tmp_path: Path, db: Database, rabbitmq_url: str) -> None:
    with open_broker(settings(tmp_path, rabbitmq_url), db) as broker:
        assert isinstance(broker, RabbitBroker)
        try:
            assert broker.stats().ready == 0
        finally:
            broker.delete_topology()
