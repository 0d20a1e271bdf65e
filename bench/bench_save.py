"""Save-path throughput: killsync's import/save vs a raw driver executemany.

Measures, on SQLite and PostgreSQL, killmails/s for
  * `import`: `killsync import` of a JSON-lines file (parse + validate + batched save), with
    the sample bodies built by tests/killmail_shapes.py (cycled, new ids; built only, not
    the real ones of ../shared, so that every clone measures the same workload), and
  * `save`: `save_killmails` of realistic parsed killmails (10 attackers, 25 items, some nested),
  * `raw`: the same rows through the DB-API driver's executemany in one transaction per batch,
and prints the ratio save/raw. Usage:

    .venv/bin/python bench/bench_save.py [--count 5000] [--pg postgresql+psycopg://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import fresh_database  # noqa: E402
from killcli.db import Database  # noqa: E402
from killcli.db.store import ATTACKERS, ITEMS, KILLMAILS, save_killmails  # noqa: E402
from killcli.importer import import_killmails  # noqa: E402
from killcli.killmail import KillmailRows, parse_killmail  # noqa: E402
from tests.factories import killmail  # noqa: E402
from tests.killmail_shapes import built_killmails  # noqa: E402

BATCH = 500
# The rows of each table in one killmail's rows, in the order of the raw INSERTs.
PARTS: tuple[Callable[[KillmailRows], list[dict[str, Any]]], ...] = (
    lambda r: [r.killmail],
    lambda r: r.attackers,
    lambda r: r.items,
)


def sample_bodies(count: int) -> list[dict[str, Any]]:
    samples = list(built_killmails().values())
    out = []
    for i in range(count):
        body = dict(samples[i % len(samples)])
        body["killmail_id"] = 10_000_000 + i
        out.append(body)
    return out


def realistic_rows(count: int) -> list[KillmailRows]:
    return [parse_killmail(killmail(20_000_000 + i, seed=i % 97)) for i in range(count)]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_import(db: Database, count: int, workdir: Path) -> float:
    path = workdir / f"import-{db.dialect}.jsonl"
    with path.open("w") as fh:
        for body in sample_bodies(count):
            fh.write(json.dumps(body) + "\n")
    return count / timed(lambda: import_killmails(db, [path]))


def bench_save(db: Database, rows: list[KillmailRows]) -> float:
    def run() -> None:
        for start in range(0, len(rows), BATCH):
            with db.session() as session:
                save_killmails(session, rows[start : start + BATCH])

    return len(rows) / timed(run)


def bench_raw(db: Database, rows: list[KillmailRows]) -> float:
    """DB-API executemany of the same rows: the floor any ORM layer adds to."""

    def insert_sql(table: Any) -> tuple[str, list[str]]:
        cols = [c.name for c in table.columns]
        mark = "?" if db.dialect == "sqlite" else "%s"
        sql = (
            f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"
        )
        return sql, cols

    def values(row: dict[str, Any], cols: list[str]) -> tuple[Any, ...]:
        out = []
        for col in cols:
            value = row.get(col)
            if col in {"extra", "payload"} and value is not None:
                value = json.dumps(value)
            if col == "killmail_time" and db.dialect == "sqlite" and value is not None:
                value = value.replace(tzinfo=None)
            if col == "saved_at":
                value = (
                    row["killmail_time"]
                    if db.dialect != "sqlite"
                    else row["killmail_time"].replace(tzinfo=None)
                )
            out.append(value)
        return tuple(out)

    statements = [insert_sql(t) for t in (KILLMAILS, ATTACKERS, ITEMS)]
    shifted = [
        KillmailRows(
            {**r.killmail, "killmail_id": r.killmail_id + 10**9},
            [{**a, "killmail_id": r.killmail_id + 10**9} for a in r.attackers],
            [{**i, "killmail_id": r.killmail_id + 10**9} for i in r.items],
        )
        for r in rows
    ]

    def run() -> None:
        raw = db.engine.raw_connection()
        try:
            for start in range(0, len(shifted), BATCH):
                batch = shifted[start : start + BATCH]
                cur = raw.cursor()
                if db.dialect == "sqlite":
                    cur.execute("BEGIN IMMEDIATE")
                for (sql, cols), part in zip(statements, PARTS, strict=True):
                    cur.executemany(sql, [values(x, cols) for r in batch for x in part(r)])
                raw.commit()
                cur.close()
        finally:
            raw.close()

    return len(rows) / timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = realistic_rows(args.count)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sqlite", "postgresql"):
            url, cleanup = fresh_database(kind, Path(tmp), args.pg)
            db = Database(url)
            db.upgrade()
            try:
                imported = bench_import(db, args.count, Path(tmp))
                saved = bench_save(db, rows)
                raw = bench_raw(db, rows)
            finally:
                db.close()
                cleanup()
            results.append(
                {
                    "database": kind,
                    "killmails": args.count,
                    "import_per_s": round(imported),
                    "save_per_s": round(saved),
                    "raw_executemany_per_s": round(raw),
                    "save_to_raw": round(saved / raw, 2),
                }
            )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{'database':<11}{'killmails':>10}{'import/s':>10}{'save/s':>9}{'raw/s':>9}{'save/raw':>10}"
    )
    for r in results:
        print(
            f"{r['database']:<11}{r['killmails']:>10}{r['import_per_s']:>10}{r['save_per_s']:>9}"
            f"{r['raw_executemany_per_s']:>9}{r['save_to_raw']:>10}"
        )


if __name__ == "__main__":
    main()
