"""`killsync dead-letters` and the dead-letter count of `killsync stats`, through the real
CLI, on the embedded deployment (SQLite + the database queue) and the fleet one
(PostgreSQL + RabbitMQ): each broker is the authority for its own dead letters."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import insert

from killcli.config import load_settings
from killcli.db import Database
from killcli.db.models import DeadLetter
from killcli.db.models import Job as JobRow
from killcli.db.types import utcnow
from killcli.queue import open_broker
from killcli.queue.rabbit import RabbitBroker
from tests.conftest import CliResult, _truncate, sim_environ
from tests.pipeline import require_rabbitmq

Cli = Callable[..., CliResult]
HOSTILE_JOB_ID = "\x1b]0;owned\x07\u202eevil"  # an OSC title change and a bidi override


@dataclass(frozen=True)
class Deployment:
    database_url: str
    broker_url: str  # "database" or an amqp:// URL
    queue_name: str
    sim: Any

    def publish_poison(self, body: dict[str, Any]) -> None:
        """A message no killsync can read, put on the queue the way another writer would."""
        if self.broker_url == "database":
            database = Database(self.database_url)
            with database.session() as s:
                s.execute(
                    insert(JobRow).values(
                        job_id=body["job_id"],
                        queue=self.queue_name,
                        character_id=5,
                        priority=0,
                        attempt=0,
                        payload=body,
                        available_at=utcnow(),
                    )
                )
            database.close()
            return
        with pika.BlockingConnection(pika.URLParameters(self.broker_url)) as connection:
            connection.channel().basic_publish("", self.queue_name, json.dumps(body).encode())


@pytest.fixture(
    params=[
        "sqlite+database",
        pytest.param("postgresql+rabbitmq", marks=[pytest.mark.postgres, pytest.mark.rabbitmq]),
    ]
)
def deployment(
    request: pytest.FixtureRequest,
    start_sim: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
) -> Iterator[Deployment]:
    """A simulator and killsync pointed at it (environment), one deployment each."""
    if request.param == "sqlite+database":
        database_url, broker_url = f"sqlite:///{tmp_path / 'killsync.db'}", "database"
    else:
        database_url, broker_url = request.getfixturevalue("pg_url"), require_rabbitmq()
        database = Database(database_url)
        _truncate(database)
        database.close()
    sim = start_sim("smoke", characters=2, killmails=10)
    env = sim_environ(sim, tmp_path / "home", database_url)
    env["KILLSYNC_BROKER_URL"] = broker_url
    env["KILLSYNC_QUEUE_NAME"] = f"killsync-test-{os.getpid()}-{time.monotonic_ns()}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ok(cli("db", "upgrade"))
    yield Deployment(database_url, broker_url, env["KILLSYNC_QUEUE_NAME"], sim)
    if broker_url != "database":  # the test's queues leave the shared RabbitMQ with it
        database = Database(database_url)
        broker = open_broker(load_settings(environ=env), database)
        assert isinstance(broker, RabbitBroker)
        broker.delete_topology()
        database.close()


def ok(result: CliResult) -> CliResult:
    assert result.exit_code == 0, result.stderr
    return result


def data_of(result: CliResult) -> Any:
    return json.loads(ok(result).stdout)["data"]


def add_and_remove_a_character(deployment: Deployment, cli: Cli) -> int:
    """A character queued and then removed: its job dies as `not tracked`."""
    sim = deployment.sim
    character_id = next(iter(sim.world.ground_truth()))
    ok(cli("users", "add", "--refresh-token", "-", stdin=sim.issue_refresh_token(character_id)))
    ok(cli("queue", "--character", str(character_id), "--one-line"))
    ok(cli("users", "remove", str(character_id)))
    return int(character_id)


def test_list_requeue_and_purge_dead_letters(deployment: Deployment, cli: Cli) -> None:
    assert data_of(cli("dead-letters", "list", "--json"))["total"] == 0
    character_id = add_and_remove_a_character(deployment, cli)
    deployment.publish_poison({"v": 9, "job_id": HOSTILE_JOB_ID, "character_id": 5})
    assert cli("worker", "--drain").exit_code == 3  # work was dead-lettered

    listed = data_of(cli("dead-letters", "list", "--json"))
    assert listed["queue"] == deployment.queue_name and listed["total"] == 2
    by_character = {d["character_id"]: d for d in listed["dead_letters"]}
    assert "not tracked" in by_character[character_id]["reason"]
    assert by_character[5]["reason"] == "poison: unknown job version 9 (this killsync reads [1, 2])"
    assert by_character[5]["job_id"] == HOSTILE_JOB_ID  # JSON is exact...
    assert "\x1b" not in cli("dead-letters", "list", "--json").stdout  # ...and escaped

    table = ok(cli("dead-letters", "list"))
    assert "2 dead letters" in table.stdout and "not tracked" in table.stdout
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    assert "\u202e" not in table.stdout and "␛]0;owned␇" in table.stdout
    assert "showing 1 of 2" in ok(cli("dead-letters", "list", "--limit", "1")).stderr

    refused = cli("dead-letters", "requeue")
    assert refused.exit_code == 2 and "add --all" in refused.stderr
    requeued = data_of(cli("dead-letters", "requeue", "--all", "--json"))
    assert requeued == {"requeued": 1, "dropped": 0, "kept": 1}  # poison stays dead
    assert data_of(cli("stats", "--json"))["queue"]["ready"] == 1

    refused = cli("dead-letters", "purge")
    assert refused.exit_code == 2 and "purge deletes all 1 dead letters" in refused.stderr
    assert data_of(cli("dead-letters", "list", "--json"))["total"] == 1
    assert data_of(cli("dead-letters", "purge", "--yes", "--json")) == {"purged": 1}
    assert data_of(cli("dead-letters", "list", "--json"))["dead_letters"] == []


def test_stats_shows_one_dead_letter_count_the_brokers(deployment: Deployment, cli: Cli) -> None:
    """A dead letter in the table that is not this broker's (another queue name: an earlier
    embedded install, or another deployment) is not counted, on RabbitMQ or not."""
    add_and_remove_a_character(deployment, cli)
    database = Database(deployment.database_url)
    with database.session() as s:
        s.execute(
            insert(DeadLetter).values(
                job_id="old", queue="another-queue", reason="from before", attempts=1
            )
        )
    database.close()
    assert cli("worker", "--drain").exit_code == 3
    stats = data_of(cli("stats", "--json"))
    assert stats["queue"]["dead_letters"] == 1  # the one count is the broker's
    assert stats["dead_letters"] == 1  # the same count where stats --json always had it
    assert "1 dead letters" in ok(cli("stats")).stdout
