"""`killsync queue` for many characters: selection + publishing, on each backend.

    .venv/bin/python bench/bench_queue.py [--characters 100000] [--rabbitmq]

Inserts N active characters whose list cache has expired into a fresh SQLite database and
a fresh PostgreSQL database, then times one `run_queue` (select due characters, publish
one job each) on the database queue, and with --rabbitmq on RabbitMQ (PostgreSQL for the
leases). The second run (everything already queued) is timed too.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from bench.run import fresh_database  # noqa: E402
from killcli.config import load_settings  # noqa: E402
from killcli.db import Database  # noqa: E402
from killcli.db.models import Character  # noqa: E402
from killcli.db.types import utcnow  # noqa: E402
from killcli.queue import open_broker  # noqa: E402
from killcli.scheduler import run_queue  # noqa: E402

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"


def populate(db: Database, count: int) -> None:
    now = utcnow()
    rows = [
        {
            "character_id": 2_100_000_000 + i,
            "name": f"Pilot {i}",
            "owner_hash": "x",
            "scopes": "esi-killmails.read_killmails.v1",
            "token_version": 1,
            "status": "active",
            "last_sync_at": now - timedelta(minutes=10),
            "list_expires_at": now - timedelta(minutes=5),
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    with db.session() as session:
        for start in range(0, count, 5000):
            session.execute(insert(Character), rows[start : start + 5000])


def time_queue(db: Database, env: dict[str, str]) -> dict[str, Any]:
    settings = load_settings(environ=env)
    with open_broker(settings, db) as broker:
        start = time.perf_counter()
        first = run_queue(db, broker)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        second = run_queue(db, broker)
        second_s = time.perf_counter() - start
        if settings.uses_rabbitmq:
            broker.delete_topology()  # type: ignore[attr-defined]
    return {
        "queued": first.published,
        "first_run_s": round(first_s, 2),
        "second_run_queued": second.published,
        "second_run_s": round(second_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--characters", type=int, default=100_000)
    parser.add_argument("--rabbitmq", action="store_true")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    cases = [("sqlite", "database"), ("postgresql", "database")]
    if args.rabbitmq:
        cases.append(("postgresql", RABBIT))
    print(
        f"{'database':<11}{'broker':<10}{'characters':>11}{'queued':>8}{'1st run s':>11}"
        f"{'2nd run s':>11}"
    )
    for kind, broker in cases:
        with tempfile.TemporaryDirectory() as tmp:
            url, cleanup = fresh_database(kind, Path(tmp), args.pg)
            db = Database(url)
            db.upgrade()
            try:
                populate(db, args.characters)
                env = {
                    "KILLSYNC_HOME": tmp,
                    "KILLSYNC_DATABASE_URL": url,
                    "KILLSYNC_BROKER_URL": broker,
                    "KILLSYNC_QUEUE_NAME": f"bench-{secrets.token_hex(3)}",
                }
                r = time_queue(db, env)
            finally:
                db.close()
                cleanup()
        name = "rabbitmq" if broker != "database" else "database"
        print(
            f"{kind:<11}{name:<10}{args.characters:>11}{r['queued']:>8}"
            f"{r['first_run_s']:>11}{r['second_run_s']:>11}"
        )


if __name__ == "__main__":
    main()
