"""The unattended pipeline for tests: settings, runtime and broker against a simulator,
on every deployment (``broker_url``: the database queue and RabbitMQ, crossed with the
``db`` fixture's SQLite and PostgreSQL). The fixtures are registered in tests/conftest.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from killcli.config import Settings, load_settings
from killcli.db import Database
from killcli.queue import Broker, RetryPolicy, open_broker
from killcli.queue.base import ConsumeResult
from killcli.runtime import Runtime, build_runtime
from killcli.service import WorkerOptions, run_worker
from killcli.worker import JobReport
from killsim import SimServer
from tests.conftest import DbTarget, sim_environ, unavailable

RABBIT_URL = os.environ.get("KILLSYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@pytest.fixture(params=["database", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_url(request: pytest.FixtureRequest) -> str:
    return "database" if request.param == "database" else require_rabbitmq()


def require_rabbitmq() -> str:
    """The test RabbitMQ's URL; skips (fails under CI) when it cannot be reached."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(RABBIT_URL)).close()
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        unavailable(f"RabbitMQ at {RABBIT_URL} ({exc})")
    return RABBIT_URL


class Pipeline:
    """Settings, runtime and broker for one simulator, closed after the test."""

    def __init__(self, sim: SimServer, db: Database, settings: Settings) -> None:
        self.sim, self.db, self.settings = sim, db, settings
        self.runtime: Runtime = build_runtime(settings, db, read_timeout_s=3.0)
        # Short retry delays: a draining worker does not wait for delayed retries.
        self.broker: Broker = open_broker(settings, db, policy=RetryPolicy(base_s=0.2, cap_s=1.0))

    def add_characters(self) -> list[int]:
        ids = list(self.sim.world.ground_truth())
        for cid in ids:
            self.runtime.accounts.add_refresh_token(self.sim.issue_refresh_token(cid))
        return ids

    def drain(
        self, concurrency: int = 4, on_report: Callable[[JobReport], None] | None = None
    ) -> ConsumeResult:
        """One `killsync worker --drain` run, through the service the CLI runs."""
        return run_worker(
            self.settings,
            self.db,
            self.broker,
            WorkerOptions(concurrency=concurrency, drain=True),
            stop=threading.Event(),
            runtime=self.runtime,
            on_report=on_report,
        )

    def close(self) -> None:
        if self.settings.uses_rabbitmq:
            self.broker.purge_dead_letters()
        self.broker.close()
        self.runtime.close()


@pytest.fixture
def pipeline(
    start_sim: Any, db: Database, db_target: DbTarget, broker_url: str, tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(scenario: str = "smoke", **overrides: Any) -> Pipeline:
        sim = start_sim(scenario, **overrides)
        env = sim_environ(sim, tmp_path / "home", db_target.url)
        env["KILLSYNC_BROKER_URL"] = broker_url
        env["KILLSYNC_QUEUE_NAME"] = f"killsync-test-{os.getpid()}-{time.monotonic_ns()}"
        made.append(Pipeline(sim, db, load_settings(environ=env)))
        return made[-1]

    yield make
    for p in made:
        p.close()
