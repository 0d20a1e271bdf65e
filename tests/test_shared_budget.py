"""Several `killsync worker --drain` processes share ESI's per-IP budget (issue 11, items 2-3).

Real worker processes against the simulator, on SQLite + the database queue and on
PostgreSQL + RabbitMQ: three workers on one egress and a small killmail bucket get no 429
and no 420; workers bound to 127.0.0.1/.2/.3 are three budgets in the simulator and three
egresses in the ledger.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from killcli.db import Database
from killcli.esi.ledger import egress_totals
from killcli.queue import open_broker
from killsim import SimServer
from tests.conftest import DbTarget, sim_environ, unavailable
from tests.test_worker import assert_ground_truth_stored_once, queue_everyone, worker_process

RABBIT_URL = os.environ.get("KILLSYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
WORKERS = 3
#: ~90 bodies through a 40-token / 2 s killmail bucket: about 9 s whatever the worker count.
SMALL_BUCKETS = {"char-killmail": (30, 5), "killmail": (40, 2), "status": (10, 5)}


@pytest.fixture(
    params=[
        pytest.param(("sqlite", "database"), id="sqlite-dbqueue"),
        pytest.param(
            ("postgresql", "rabbitmq"),
            id="postgresql-rabbitmq",
            marks=[pytest.mark.postgres, pytest.mark.rabbitmq],
        ),
    ]
)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The database URL and broker of one deployment (the queue deleted afterwards)."""
    database, broker = request.param
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'killsync.db'}"
    else:
        url = request.getfixturevalue("pg_url")
        _truncate_pg(url)
    target = DbTarget(url, database)
    env = {
        "KILLSYNC_DATABASE_URL": target.url,
        "KILLSYNC_BROKER_URL": "database",
        "KILLSYNC_QUEUE_NAME": f"killsync-budget-{secrets.token_hex(4)}",
    }
    if broker == "rabbitmq":
        _check_rabbit()
        env["KILLSYNC_BROKER_URL"] = RABBIT_URL
    yield env
    if broker == "rabbitmq":
        _delete_queue(env["KILLSYNC_QUEUE_NAME"], target.url)


def _truncate_pg(url: str) -> None:
    from tests.conftest import _truncate

    db = Database(url)
    _truncate(db)
    db.close()


def _check_rabbit() -> None:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(RABBIT_URL)).close()
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        unavailable(f"RabbitMQ at {RABBIT_URL} ({exc})")


def _delete_queue(queue: str, database_url: str) -> None:
    from killcli.queue.rabbit import RabbitBroker

    db = Database(database_url)
    RabbitBroker(RABBIT_URL, db, queue_name=queue).delete_topology()
    db.close()


def run_workers(
    sim: SimServer, env: dict[str, str], addresses: list[str | None], *extra: str
) -> None:
    """Queue everyone, then one `worker --drain` per address, all at once; all exit 0."""
    db = Database(env["KILLSYNC_DATABASE_URL"])
    try:
        db.upgrade()
        queue_everyone(sim, db, env)
    finally:
        db.close()
    procs = []
    for address in addresses:
        worker_env = dict(env)
        if address is not None:
            worker_env["KILLSYNC_SOURCE_ADDRESS"] = address
        procs.append(worker_process(worker_env, "--drain", "--concurrency", "2", *extra))
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]


def small_sim(start_sim: Any, **overrides: Any) -> SimServer:
    options: dict[str, Any] = {
        "characters": 4,
        "killmails": 90,
        "shared_fraction": 0.2,
        "page_size": 10,
        "buckets": SMALL_BUCKETS,
    }
    options.update(overrides)
    sim: SimServer = start_sim("ratelimit", **options)
    return sim


def test_three_workers_on_one_egress_get_no_429_and_no_420(
    start_sim: Any,
    deployment: dict[str, str],
    tmp_path: Path,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = small_sim(start_sim)
    env = {**sim_environ(sim, tmp_path / "home", deployment["KILLSYNC_DATABASE_URL"]), **deployment}
    run_workers(sim, env, [None] * WORKERS)
    stats = sim.stats.snapshot()
    assert stats.rate_limited == 0, stats.to_dict()["requests"]
    assert stats.error_limited == 0
    db = Database(env["KILLSYNC_DATABASE_URL"])
    try:
        assert_ground_truth_stored_once(sim, db)
        (budget,) = [t for t in egress_totals(db) if t.budget == "killmail"]
        assert (budget.limit_tokens, budget.window_s) == (40, 2.0)
    finally:
        db.close()
    assert queue_is_empty(env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    shown = json.loads(cli("stats", "--json").stdout)["data"]["egress"]
    assert {(b["budget"], b["limit"]) for b in shown} >= {("killmail", 40)}
    assert "ESI budget (shared)" in cli("stats").stdout


def queue_is_empty(env: dict[str, str]) -> bool:
    from killcli.config import load_settings

    settings = load_settings(environ=env)
    db = Database(settings.database_url)
    try:
        with open_broker(settings, db) as broker:
            return bool(broker.stats().ready == 0)
    finally:
        db.close()


def test_workers_on_distinct_source_addresses_are_distinct_budgets(
    start_sim: Any, tmp_path: Path
) -> None:
    """SQLite only: the egress is keyed the same way on both databases.

    Each worker runs two of the six characters (``--max-jobs 2`` claims only what it runs),
    so a worker that starts late still fetches bodies of its own.
    """
    sim = small_sim(start_sim, characters=6, killmails=120, shared_fraction=0.0)
    addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    url = f"sqlite:///{tmp_path / 'killsync.db'}"
    env = {**sim_environ(sim, tmp_path / "home", url), "KILLSYNC_BROKER_URL": "database"}
    run_workers(sim, env, list(addresses), "--max-jobs", "2")
    stats = sim.stats.snapshot()
    assert stats.rate_limited == 0 and stats.error_limited == 0
    # The simulator keys the killmail bucket by the peer address, as ESI does.
    per_ip = stats.tokens_spent["killmail"]
    assert set(per_ip) == set(addresses), per_ip
    db = Database(url)
    try:
        egresses = {t.egress for t in egress_totals(db) if t.budget == "killmail"}
        assert_ground_truth_stored_once(sim, db)
    finally:
        db.close()
    assert egresses == set(addresses)
    assert queue_is_empty(env)
