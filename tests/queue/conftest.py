"""Fixtures of the job queue tests: the real RabbitMQ, a manual clock, consumer helpers.

Every RabbitMQ test gets its own queue name and deletes all it declared at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pika
import pika.exceptions
import pytest

from killcli.clock import ManualClock
from killcli.db import Database
from killcli.queue import Broker, ConsumeResult, Handler, Job, RetryPolicy
from killcli.queue.base import Outcome
from killcli.queue.rabbit import RabbitBroker
from tests.conftest import unavailable

RABBITMQ_URL = os.environ.get("KILLSYNC_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
FAST = RetryPolicy(max_attempts=3, base_s=0.05, cap_s=0.2)
WATCHDOG_S = 30.0  # a consumer that has not returned by then has a bug: stop it, fail


START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def now() -> ManualClock:
    """The wall clock of the queue under test: it moves only when told to."""
    return ManualClock.at(START)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The test broker's URL; skips (fails under CI) when it cannot be reached."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    except pika.exceptions.AMQPError as exc:
        unavailable(f"RabbitMQ at {RABBITMQ_URL} ({type(exc).__name__})")
    connection.close()
    return RABBITMQ_URL


@pytest.fixture
def queue_name() -> str:
    return f"killsync-test-{secrets.token_hex(4)}"


@pytest.fixture
def lease_db(tmp_path: Path) -> Iterator[Database]:
    """The database holding a RabbitMQ queue's leases (SQLite; see test_rabbit_race)."""
    db = Database(f"sqlite:///{tmp_path / 'leases.db'}")
    db.upgrade()
    yield db
    db.close()


MakeRabbit = Callable[..., RabbitBroker]


@pytest.fixture
def make_rabbit(rabbitmq_url: str, queue_name: str, lease_db: Database) -> Iterator[MakeRabbit]:
    """Build RabbitMQ brokers on this test's queue; all are closed and the queues deleted."""
    made: list[RabbitBroker] = []

    def make(**options: object) -> RabbitBroker:
        options.setdefault("queue_name", queue_name)
        options.setdefault("policy", FAST)
        options.setdefault("reconnect_timeout_s", 20.0)
        url = str(options.pop("url", rabbitmq_url))
        db = options.pop("db", lease_db)
        broker = RabbitBroker(url, db, **options)  # type: ignore[arg-type]
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()
    cleanup = RabbitBroker(rabbitmq_url, lease_db, queue_name=queue_name)
    cleanup.delete_topology()


def done_recording(seen: list[int], field: str) -> Handler:
    """A handler that records one field of each job (``character_id``, ``attempt``) and
    settles it done."""

    def handle(job: Job) -> Outcome:
        seen.append(getattr(job, field))
        return Outcome.done()

    return handle


def consume(broker: Broker, handler: Handler, **options: object) -> ConsumeResult:
    """``broker.consume`` with a watchdog, so a bug fails the test instead of hanging it."""
    stop = options.pop("stop", None) or threading.Event()
    assert isinstance(stop, threading.Event)
    fired = threading.Event()

    def watchdog() -> None:
        fired.set()
        stop.set()

    timer = threading.Timer(WATCHDOG_S, watchdog)
    timer.start()
    try:
        result = broker.consume(handler, stop=stop, **options)  # type: ignore[arg-type]
    finally:
        timer.cancel()
    assert not fired.is_set(), "consume did not return in time"
    return result


class BackgroundConsumer:
    """``consume`` on a thread of its own, for tests that look at a busy queue."""

    def __init__(self, broker: Broker, handler: Handler, **options: object) -> None:
        self.stop = threading.Event()
        self.result: ConsumeResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(broker, handler, options))
        self._thread.start()

    def _run(self, broker: Broker, handler: Handler, options: dict[str, object]) -> None:
        try:
            self.result = consume(broker, handler, stop=self.stop, **options)
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            self.error = exc

    def join(self, *, stop: bool = False) -> ConsumeResult:
        if stop:
            self.stop.set()
        self._thread.join(WATCHDOG_S + 5)
        if self.error is not None:
            raise self.error
        assert self.result is not None, "consumer did not finish"
        return self.result


def close_connections_named(name: str) -> int:
    """Force-close the broker's connections with this client name, as an operator (or a
    network drop) would; returns how many were closed."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl (to force-close connections)")
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "--no-table-headers", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    pids = [
        line.split("\t", 1)[0]
        for line in listing.stdout.splitlines()
        if f'{{"connection_name","{name}"}}' in line
    ]
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "killsync test"],
            capture_output=True,
            check=True,
            timeout=30,
        )
    return len(pids)
