"""`killsync kills` on a big database: time `list_kills` over N killmails.

    .venv/bin/python bench/bench_kills.py [--killmails 1000000] [--pilots 50000]

Fills fresh SQLite and PostgreSQL databases in bulk, in SQL (``INSERT .. SELECT`` over a
series: ``generate_series`` on PostgreSQL, a recursive CTE on SQLite): N killmails over a
year (one in ten a structure), three attackers each (the first the final blow), a
corporation's list, and names for every pilot, corporation, ship and system. Then it
times the queries of `killsync kills` (everyone; one character; one corporation; since
7 days; a character since 30 days), three runs each, and prints the slowest. Target:
under a second each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.run import fresh_database  # noqa: E402
from killcli.db import Database  # noqa: E402
from killcli.db.types import utcnow  # noqa: E402
from killcli.kills import KillsResult, Owner, list_kills  # noqa: E402

PILOT0 = 2_100_000_000
CORP0 = 98_000_000
CORPORATIONS = 2_000
TRACKED_CORP = CORP0 + 1
SECONDS_APART = 31  # 1M killmails span a year


def _series(kind: str) -> tuple[str, str]:
    """(a prefix, a FROM clause) that yield x = 0 .. :n - 1."""
    if kind == "postgresql":
        return "", "generate_series(0::bigint, :n - 1) AS g(x)"
    return "WITH RECURSIVE g(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM g WHERE x < :n - 1) ", "g"


def _ago(kind: str) -> str:
    if kind == "postgresql":
        return f"now() - x * interval '{SECONDS_APART} seconds'"
    return (
        f"strftime('%Y-%m-%d %H:%M:%S', 'now', '-' || (x * {SECONDS_APART}) || ' seconds')"
        " || '.000000'"
    )


def populate(db: Database, kind: str, killmails: int, pilots: int) -> None:
    prefix, series = _series(kind)
    pilot = f"{PILOT0} + ((x * 7919) % {pilots})"
    statements = [
        f"""{prefix}INSERT INTO killmails (killmail_id, killmail_hash, killmail_time,
            solar_system_id, victim_character_id, victim_corporation_id, victim_ship_type_id,
            victim_damage_taken, victim_has_items, attacker_count, final_blow_character_id,
            saved_at)
        SELECT 100000000 + x, NULL, {_ago(kind)}, 30000000 + x % 5000,
            CASE WHEN x % 10 = 0 THEN NULL ELSE {pilot} END, {CORP0} + x % {CORPORATIONS},
            580 + x % 300, 1000 + x % 5000, (x % 2 = 0), 3,
            {PILOT0} + ((x * 31) % {pilots}), {_ago(kind)}
        FROM {series}""",
        f"""{prefix}INSERT INTO killmail_attackers (killmail_id, position, character_id,
            corporation_id, damage_done, final_blow, security_status, ship_type_id)
        SELECT 100000000 + x, p.p, {PILOT0} + ((x * 31 + p.p * 17) % {pilots}),
            {CORP0} + (x + p.p * 7) % {CORPORATIONS}, 100 + p.p, (p.p = 0), -1.5, 600 + p.p
        FROM {series} CROSS JOIN (SELECT 0 AS p UNION ALL SELECT 1 UNION ALL SELECT 2) AS p""",
        f"""INSERT INTO corporations (corporation_id, name, enabled, status, created_at,
            updated_at)
        VALUES ({TRACKED_CORP}, 'Tracked Corp', (1 = 1), 'active', {_now(kind)}, {_now(kind)})""",
        f"""INSERT INTO corporation_killmails (corporation_id, killmail_id, seen_at)
        SELECT DISTINCT {TRACKED_CORP}, killmail_id, {_now(kind)} FROM killmail_attackers
        WHERE corporation_id = {TRACKED_CORP}""",
        f"""{prefix}INSERT INTO names (id, name, category, fetched_at)
        SELECT {PILOT0} + x, 'Pilot ' || x, 'character', {_now(kind)} FROM {series}""",
        f"""INSERT INTO names (id, name, category, fetched_at)
        SELECT DISTINCT victim_corporation_id, 'Corp', 'corporation', {_now(kind)}
        FROM killmails WHERE killmail_id < 100000000 + {CORPORATIONS}""",
    ]
    with db.engine.begin() as conn:
        for index, sql in enumerate(statements):
            n = pilots if index == 4 else killmails
            conn.execute(text(sql), {"n": n})
    with db.engine.connect() as conn:
        if kind == "postgresql":
            conn.execute(text("COMMIT"))
            conn.execute(text("ANALYZE"))
        else:
            conn.execute(text("ANALYZE"))
            conn.commit()


def _now(kind: str) -> str:
    return "now()" if kind == "postgresql" else "strftime('%Y-%m-%d %H:%M:%S', 'now')"


def cases() -> list[tuple[str, Callable[[Database], KillsResult]]]:
    busy = Owner(character_id=PILOT0 + 42)
    corporation = Owner(corporation_id=TRACKED_CORP)
    return [
        ("kills", list_kills),
        ("kills --character", lambda db: list_kills(db, owner=busy)),
        ("kills --corporation", lambda db: list_kills(db, owner=corporation)),
        (
            "kills --since 7d --limit 1000",
            lambda db: list_kills(db, since=utcnow() - timedelta(days=7), limit=1000),
        ),
        (
            "kills --character --since 30d",
            lambda db: list_kills(db, owner=busy, since=utcnow() - timedelta(days=30)),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--killmails", type=int, default=1_000_000)
    parser.add_argument("--pilots", type=int, default=50_000)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    print(f"{'database':<11}{'killmails':>10}{'fill s':>8}  {'query':<32}{'rows':>6}{'max s':>8}")
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            url, cleanup = fresh_database(kind, Path(tmp), args.pg)
            db = Database(url)
            db.upgrade()
            try:
                start = time.perf_counter()
                populate(db, kind, args.killmails, args.pilots)
                fill = time.perf_counter() - start
                for label, run in cases():
                    runs = []
                    for _ in range(3):
                        start = time.perf_counter()
                        result = run(db)
                        runs.append(time.perf_counter() - start)
                    assert result.kills, label
                    print(
                        f"{kind:<11}{args.killmails:>10}{fill:>8.0f}  {label:<32}"
                        f"{len(result.kills):>6}{max(runs):>8.3f}"
                    )
            finally:
                db.close()
                cleanup()


if __name__ == "__main__":
    main()
