"""`killsync stats` on a big database: time `collect_stats` over N killmails.

    .venv/bin/python bench/bench_stats.py [--killmails 2000000] [--characters 2000]

Fills the killmails and character_killmails tables of fresh SQLite and PostgreSQL
databases with N minimal rows (no attackers or items: stats never reads them), links each
killmail to one of the characters, and times `collect_stats` three times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402

from bench.run import fresh_database  # noqa: E402
from killcli.db import Database  # noqa: E402
from killcli.db.models import Character, CharacterKillmail, Killmail  # noqa: E402
from killcli.db.types import utcnow  # noqa: E402
from killcli.stats import collect_stats  # noqa: E402

CHUNK = 20_000


def populate(db: Database, killmails: int, characters: int) -> None:
    now = utcnow()
    with db.session() as s:
        s.execute(
            insert(Character),
            [
                {
                    "character_id": 2_100_000_000 + c,
                    "name": f"Pilot {c}",
                    "owner_hash": "x",
                    "scopes": "esi-killmails.read_killmails.v1",
                    "token_version": 1,
                    "status": "active",
                    "last_sync_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for c in range(characters)
            ],
        )
    for start in range(0, killmails, CHUNK):
        ids = range(start, min(start + CHUNK, killmails))
        with db.session() as s:
            s.execute(
                insert(Killmail),
                [
                    {
                        "killmail_id": 100_000_000 + i,
                        "killmail_hash": None,
                        "killmail_time": now - timedelta(minutes=i % 200_000),
                        "solar_system_id": 1,
                        "victim_ship_type_id": 670,
                        "victim_damage_taken": 1,
                        "victim_has_items": False,
                        "attacker_count": 1,
                        "saved_at": now,
                    }
                    for i in ids
                ],
            )
            s.execute(
                insert(CharacterKillmail),
                [
                    {
                        "character_id": 2_100_000_000 + i % characters,
                        "killmail_id": 100_000_000 + i,
                        "seen_at": now,
                    }
                    for i in ids
                ],
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--killmails", type=int, default=2_000_000)
    parser.add_argument("--characters", type=int, default=2_000)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print(f"{'database':<11}{'killmails':>11}{'fill s':>8}{'stats s (3 runs)':>28}")
    for kind in ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory() as tmp:
            url, cleanup = fresh_database(kind, Path(tmp), args.pg)
            db = Database(url)
            db.upgrade()
            try:
                start = time.perf_counter()
                populate(db, args.killmails, args.characters)
                if kind == "postgresql":
                    with db.engine.connect() as conn:
                        conn.execute(text("COMMIT"))
                        conn.execute(text("ANALYZE"))
                fill = time.perf_counter() - start
                runs = []
                for _ in range(3):
                    start = time.perf_counter()
                    stats = collect_stats(db)
                    runs.append(time.perf_counter() - start)
                assert stats.killmails_total == args.killmails
            finally:
                db.close()
                cleanup()
        print(
            f"{kind:<11}{args.killmails:>11}{fill:>8.0f}{'  '.join(f'{r:.2f}' for r in runs):>28}"
        )


if __name__ == "__main__":
    main()
