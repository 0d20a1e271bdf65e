"""Fixtures of the events tests: payloads, the outbox, RabbitMQ, a Discord/Slack server."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pika
import pika.exceptions
import pytest

from killcli.clock import ManualClock
from killcli.db import Database
from killcli.events.hookpost import make_client
from killcli.killmail import format_time, parse_killmail
from killcli.sso.crypto import TokenCipher, generate_key
from killcli.sync.events import killmail_saved_events, save_events
from tests.conftest import unavailable
from tests.events.chat import ChatServer
from tests.factories import killmail

RABBIT_URL = os.environ.get("KILLSYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def make_payload(
    killmail_id: int,
    when: datetime,
    *,
    victim: str = "Victim Pilot",
    final: str = "Final Blow",
    character_id: int = 2112000001,
) -> dict[str, Any]:
    """A `killmail.saved` payload built by the real sync code from a factory killmail."""
    body = killmail(killmail_id, attackers=3, items=2)
    body["killmail_time"] = format_time(when)
    rows = parse_killmail(body, killmail_hash="a" * 40)
    names: dict[int, str | None] = {
        body["solar_system_id"]: "Jita",
        body["victim"]["ship_type_id"]: "Rifter",
    }
    if "character_id" in body["victim"]:
        names[body["victim"]["character_id"]] = victim
    blow = next(a for a in body["attackers"] if a["final_blow"])
    for key in ("character_id", "corporation_id", "faction_id"):
        if key in blow:
            names[blow[key]] = final
    return killmail_saved_events([rows], names, character_id=character_id)[0]


def add_events(db: Database, payloads: list[dict[str, Any]]) -> None:
    """Write payloads to the outbox through the sync engine's own function."""
    with db.session() as session:
        save_events(session, payloads)


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def clock() -> ManualClock:
    """A fake clock whose `now` is real time now (so outbox timestamps make sense)."""
    return ManualClock(start_wall_s=datetime.now(UTC).timestamp())


@pytest.fixture
def secret_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = generate_key()
    monkeypatch.setenv("KILLSYNC_SECRET_KEY", key)
    return key


@pytest.fixture
def cipher(secret_key: str) -> TokenCipher:
    return TokenCipher([secret_key])


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """The webhook deliverer's HTTP client."""
    with make_client() as client:
        yield client


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


# -- RabbitMQ ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    try:
        pika.BlockingConnection(pika.URLParameters(RABBIT_URL)).close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        unavailable(f"RabbitMQ at 127.0.0.1:5672 ({type(exc).__name__})")
    return RABBIT_URL


@pytest.fixture
def rabbit(rabbit_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    yield connection.channel()
    connection.close()


@pytest.fixture
def exchange(rabbit_url: str) -> Iterator[str]:
    """A unique exchange name, deleted after the test."""
    name = f"killsync.test.{secrets.token_hex(6)}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    connection.channel().exchange_delete(name)
    connection.close()


BindQueue = Callable[[str], Callable[[], list[tuple[Any, Any]]]]


@pytest.fixture
def bind_queue(rabbit: Any) -> BindQueue:
    """Bind an exclusive queue to an exchange; returns a function draining it."""

    def bind(exchange_name: str) -> Callable[[], list[tuple[Any, Any]]]:
        rabbit.exchange_declare(exchange_name, exchange_type="fanout", durable=True)
        queue = rabbit.queue_declare("", exclusive=True, auto_delete=True).method.queue
        rabbit.queue_bind(queue, exchange_name)

        def drain() -> list[tuple[Any, Any]]:
            messages: list[tuple[Any, Any]] = []
            while True:
                method, props, body = rabbit.basic_get(queue, auto_ack=True)
                if method is None:
                    return messages
                messages.append((props, body))

        return drain

    return bind
