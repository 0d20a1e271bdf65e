"""The outbox relay against a real RabbitMQ fanout exchange, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import datetime

import pytest
from sqlalchemy import select

from killcli.db import Database
from killcli.errors import QueueUnavailable
from killcli.events.outbox import EVENTS
from killcli.events.relay import EventRelay, decode_message, relay_pending
from tests.events.conftest import BindQueue, add_events, make_payload

pytestmark = pytest.mark.rabbitmq


def _unpublished(db: Database) -> int:
    with db.session() as s:
        return len(s.execute(select(EVENTS.c.id).where(EVENTS.c.published_at.is_(None))).all())


def test_relay_publishes_each_event_once_and_marks_it(
    db: Database, rabbit_url: str, exchange: str, bind_queue: BindQueue, now: datetime
) -> None:
    drain = bind_queue(exchange)
    add_events(db, [make_payload(k, now) for k in range(1, 6)])
    assert relay_pending(db, rabbit_url, batch=2, exchange=exchange) == 5
    assert relay_pending(db, rabbit_url, batch=2, exchange=exchange) == 0
    assert _unpublished(db) == 0
    messages = drain()
    bodies = [json.loads(body) for _props, body in messages]
    assert [b["payload"]["killmail_id"] for b in bodies] == [1, 2, 3, 4, 5]
    assert {b["type"] for b in bodies} == {"killmail.saved"}
    for props, body in messages:
        assert props.message_id == str(json.loads(body)["id"])
        assert props.delivery_mode == 2
        assert props.content_type == "application/json"
        event = decode_message(body, props)
        assert event is not None and event.created_at is not None


def test_two_relays_at_once_publish_each_row_once(
    db: Database, rabbit_url: str, exchange: str, bind_queue: BindQueue, now: datetime
) -> None:
    drain = bind_queue(exchange)
    add_events(db, [make_payload(k, now) for k in range(1, 301)])
    counts: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with EventRelay(rabbit_url, exchange=exchange) as relay:
                counts.append(relay.relay_pending(db, batch=20).published)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and sum(counts) == 300
    ids = Counter(json.loads(body)["id"] for _props, body in drain())
    assert len(ids) == 300 and set(ids.values()) == {1}
    assert _unpublished(db) == 0


def test_a_long_lived_relay_reconnects_after_losing_its_connection(
    db: Database, rabbit_url: str, exchange: str, bind_queue: BindQueue, now: datetime
) -> None:
    drain = bind_queue(exchange)
    with EventRelay(rabbit_url, exchange=exchange) as relay:
        add_events(db, [make_payload(1, now)])
        assert relay.relay_pending(db).published == 1
        relay._connection.close()  # type: ignore[union-attr]  # the broker went away
        add_events(db, [make_payload(2, now)])
        assert relay.relay_pending(db).published == 1
    assert [json.loads(b)["payload"]["killmail_id"] for _p, b in drain()] == [1, 2]


def test_unreachable_broker_leaves_rows_unpublished_and_hides_the_password(
    db: Database, now: datetime
) -> None:
    add_events(db, [make_payload(1, now)])
    url = "amqp://guest:hunter2secret@127.0.0.1:1/"
    with pytest.raises(QueueUnavailable) as info:
        relay_pending(db, url)
    assert "hunter2secret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)
    assert _unpublished(db) == 1
