"""Prices and values: `killsync prices import` rows/s and the time to value stored killmails.

Measures, on SQLite and PostgreSQL (issue 14's targets: import >= 200k rows/s, 100k
killmails valued in under a minute):
  * `import`: `import_price_files` of EVE Ref-style daily archives written by the
    simulator (`killsim.market.write_history_archives`: one bzip2 CSV a day, every type of
    The Forge: ``--types`` x ``--days`` rows; the issue's year is 15,000 x 365), the files
    written beforehand (not timed), one transaction per file;
  * `values`: `compute_values` of ``--killmails`` stored killmails (a hull, 20 items of
    those types, one in ten a container with 3 items inside, some blueprint copies),
    killed over the archives' days; the killmails are saved beforehand (not timed).

Usage:

    .venv/bin/python bench/bench_prices.py [--types 15000] [--days 365] [--killmails 100000]
        [--database sqlite,postgresql] [--pg postgresql+psycopg://postgres@127.0.0.1/test] [--json]
        [--archives DIR]   # the daily files written once there and reused by later runs

Prints wall and CPU seconds (this process's: PostgreSQL's server is not in them; on a
shared machine the CPU seconds move less than the wall time) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import fresh_database  # noqa: E402
from killcli.db import Database  # noqa: E402
from killcli.db.store import save_killmails  # noqa: E402
from killcli.killmail import parse_killmail  # noqa: E402
from killcli.prices.importer import import_price_files  # noqa: E402
from killcli.values import compute_values  # noqa: E402
from killsim.market import THE_FORGE, Market, write_history_archives  # noqa: E402

FIRST_DAY = date(2025, 1, 1)
SAVE_BATCH = 1000


def write_archives(directory: Path, types: int, days: int) -> int:
    """The daily files (the simulator's prices for type ids 1..types); their rows."""
    market = Market(())  # no type table: every id is priced as a module
    span = [FIRST_DAY + timedelta(days=n) for n in range(days)]
    write_history_archives(directory, market, span, type_ids=range(1, types + 1))
    return types * days


def body(killmail_id: int, rng: random.Random, types: int, days: int) -> dict[str, Any]:
    """A killmail killed on one of the archives' days, with types among theirs."""
    when = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=UTC) + timedelta(
        seconds=rng.randint(0, days * 86_400 - 1)
    )
    items = []
    for index in range(20):
        row: dict[str, Any] = {
            "flag": rng.choice((5, 11, 12, 19, 20, 27, 28, 92, 87)),
            "item_type_id": rng.randint(1, types),
            "singleton": 2 if rng.random() < 0.02 else 0,
            rng.choice(("quantity_destroyed", "quantity_dropped")): rng.randint(1, 500),
        }
        if index % 10 == 0:
            row["items"] = [
                {"flag": 5, "item_type_id": rng.randint(1, types), "quantity_dropped": 2,
                 "singleton": 0}
                for _ in range(3)
            ]  # fmt: skip
        items.append(row)
    return {
        "attackers": [{"corporation_id": 1000127, "damage_done": 100, "final_blow": True,
                       "security_status": 0.0, "ship_type_id": 587}],
        "killmail_id": killmail_id,
        "killmail_time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "solar_system_id": 30000142,
        "victim": {"corporation_id": 98000001, "damage_taken": 100,
                   "ship_type_id": rng.randint(1, types), "items": items},
    }  # fmt: skip


def store_killmails(db: Database, count: int, types: int, days: int) -> None:
    rng = random.Random(14)
    for start in range(0, count, SAVE_BATCH):
        rows = [
            parse_killmail(body(100_000_000 + i, rng, types, days))
            for i in range(start, min(count, start + SAVE_BATCH))
        ]
        with db.session() as session:
            save_killmails(session, rows)


def run(
    kind: str, args: argparse.Namespace, archives: Path, rows: int, tmp: Path
) -> dict[str, Any]:
    url, cleanup = fresh_database(kind, tmp, args.pg)
    db = Database(url)
    db.upgrade()
    try:
        cpu = time.process_time()
        imported = import_price_files(db, [archives], THE_FORGE)
        import_cpu_s = time.process_time() - cpu
        assert imported.rows == rows, imported.errors
        assert not imported.errors, imported.errors
        print(f"{kind}: imported at {imported.rows_per_s:.0f} rows/s", file=sys.stderr)
        store_killmails(db, args.killmails, args.types, args.days)
        started, cpu = time.perf_counter(), time.process_time()
        valued = compute_values(db, THE_FORGE)
        values_s = time.perf_counter() - started
        values_cpu_s = time.process_time() - cpu
        assert valued.valued == args.killmails
    finally:
        db.close()
        cleanup()
    return {
        "database": kind,
        "rows": rows,
        "files": imported.files,
        "import_s": round(imported.elapsed_s, 2),
        "import_rows_per_s": round(imported.rows_per_s),
        "import_cpu_s": round(import_cpu_s, 2),
        "killmails": args.killmails,
        "values_s": round(values_s, 2),
        "values_cpu_s": round(values_cpu_s, 2),
        "killmails_valued_per_s": round(args.killmails / values_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=int, default=15_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--killmails", type=int, default=100_000)
    parser.add_argument("--database", default="sqlite,postgresql")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--archives", type=Path, help="reuse (or write once) the daily files in this directory"
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        size = f"{args.types}x{args.days}"
        archives = args.archives / size if args.archives else Path(tmp) / "archives"
        started = time.perf_counter()
        if (archives / ".complete").exists():  # written by an earlier run
            rows = args.types * args.days
        else:
            rows = write_archives(archives, args.types, args.days)
            (archives / ".complete").touch()
        print(f"{rows} rows in {args.days} files ready in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)  # fmt: skip
        for kind in args.database.split(","):
            results.append(run(kind, args, archives, rows, Path(tmp)))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'database':<11}{'rows':>10}{'import s':>10}{'rows/s':>9}{'cpu s':>7}{'killmails':>11}"
          f"{'values s':>10}{'cpu s':>7}{'valued/s':>10}")  # fmt: skip
    for r in results:
        print(
            f"{r['database']:<11}{r['rows']:>10}{r['import_s']:>10}{r['import_rows_per_s']:>9}"
            f"{r['import_cpu_s']:>7}{r['killmails']:>11}{r['values_s']:>10}"
            f"{r['values_cpu_s']:>7}{r['killmails_valued_per_s']:>10}"
        )
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
