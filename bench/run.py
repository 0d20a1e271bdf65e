"""Run killsync against a simulator scenario and print how close it came to the ideal.

    .venv/bin/python bench/run.py fleet [--database sqlite|postgresql] [--concurrency 8] [--json]
    .venv/bin/python bench/run.py smoke incremental chaos fleet

The simulator runs in a child process (its own interpreter lock, like the real ESI is
another machine); killsync runs here exactly as `killsync queue` + `killsync worker
--drain` would: characters are added from refresh tokens, queued, and synced by the
worker with N concurrent syncs. Figures: wall time of the sync phase, the scenario's
theoretical lower bound (the fewest tokens the workload needs, spent as fast as the
scenario's buckets allow: `WorkloadSummary.min_sync_time_s`), their ratio, requests by
status, 429/420 counts, bodies fetched more than once, and peak RSS of this process.
The `incremental` scenario then re-syncs (expect one 304 per character and no body) and
re-syncs again after k new kills (expect k bodies).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import multiprocessing as mp
import resource
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from killcli.config import load_settings  # noqa: E402
from killcli.db import Database  # noqa: E402
from killcli.db.models import Killmail  # noqa: E402
from killcli.queue import open_broker  # noqa: E402
from killcli.runtime import build_runtime  # noqa: E402
from killcli.scheduler import run_queue  # noqa: E402
from killcli.service import WorkerOptions, run_worker  # noqa: E402
from killsim import Scenario, SimServer  # noqa: E402

BODY = "/killmails/{killmail_id}/{killmail_hash}"
LIST = "/characters/{character_id}/killmails/recent"


# -- the simulator in its own process ----------------------------------------------------


def _sim_main(name: str, seed: int, overrides: dict[str, Any], conn: Connection) -> None:
    scenario = dataclasses.replace(Scenario.named(name, seed=seed), **overrides)
    with SimServer(scenario, port=0) as sim:
        conn.send(
            {
                "provisioned": sim.provision().to_dict(),
                "summary": dataclasses.asdict(sim.world.summary()),
                "list_cache_s": sim.scenario.list_cache_s,
                "buckets": dict(sim.scenario.buckets),
            }
        )
        while True:
            command, arg = conn.recv()
            if command == "stop":
                return
            if command == "stats":
                s = sim.stats.snapshot()
                conn.send(
                    {
                        "requests": {f"{r} {st}": n for (r, st), n in s.requests.items()},
                        "body_fetches_max": max(s.body_fetches.values(), default=0),
                        "bodies_fetched_twice": sum(1 for n in s.body_fetches.values() if n > 1),
                        "peak_concurrent": s.peak_concurrent,
                        "tokens_spent": {g: sum(v.values()) for g, v in s.tokens_spent.items()},
                        "tokens_by_key": {g: dict(v) for g, v in s.tokens_spent.items()},
                    }
                )
            elif command == "truth":
                truth = sim.world.ground_truth()
                conn.send({c: sorted(rows) for c, rows in truth.items()})
            elif command == "add_kills":
                victims = [c.character_id for c in sim.world.characters]
                conn.send(
                    [sim.world.add_kill(victim=victims[i % len(victims)]) for i in range(arg)]
                )


class SimProcess:
    def __init__(self, name: str, seed: int, overrides: dict[str, Any]) -> None:
        self.conn, child = mp.Pipe()
        self.process = mp.get_context("fork").Process(
            target=_sim_main, args=(name, seed, overrides, child), daemon=True
        )
        self.process.start()
        self.info: dict[str, Any] = self.conn.recv()

    def ask(self, command: str, arg: Any = None) -> Any:
        self.conn.send((command, arg))
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send(("stop", None))
        self.process.join(10)


# -- a memory timeline (--sample-memory) ------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _library(name: str) -> Any:
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def memory_line(started: float) -> str:
    """RSS; glibc malloc in use and free; SQLite's allocations; Python's blocks and objects."""
    mib = 1 << 20
    parts = [f"{time.monotonic() - started:7.1f}s"]
    rss_pages = int(Path("/proc/self/statm").read_text().split()[1])
    parts.append(f"rss {rss_pages * resource.getpagesize() / mib:6.1f}")
    libc = _library("libc.so.6")
    if libc is not None and hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        parts.append(f"malloc used {info.uordblks / mib:5.1f} free {info.fordblks / mib:5.1f}")
    sqlite = _library("libsqlite3.so.0")
    if sqlite is not None:
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        parts.append(f"sqlite {sqlite.sqlite3_memory_used() / mib:5.1f}")
    parts.append(f"py blocks {sys.getallocatedblocks() / 1000:5.0f}k")
    parts.append(f"threads {threading.active_count()}")
    return " ".join(parts) + " MiB"


def sample_memory(every_s: float, stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(every_s):
        print(memory_line(started), file=sys.stderr, flush=True)


# -- one run -----------------------------------------------------------------------------


def fresh_database(kind: str, tmp: Path, pg_admin: str) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    admin = make_url(pg_admin)
    name = f"killsync_bench_{secrets.token_hex(3)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


def sync_all(db: Database, broker: Any, drain: Callable[[], object]) -> float:
    """One `killsync queue` + `killsync worker --drain` round; its wall time."""
    start = time.monotonic()
    run_queue(db, broker)
    drain()
    return time.monotonic() - start


def run_scenario(
    name: str,
    *,
    database: str,
    concurrency: int,
    pg_admin: str,
    seed: int = 1,
    new_kills: int = 5,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    sim = SimProcess(name, seed, overrides or {})
    prov = sim.info["provisioned"]
    with tempfile.TemporaryDirectory() as tmp:
        url, cleanup = fresh_database(database, Path(tmp), pg_admin)
        env = {
            "KILLSYNC_HOME": tmp,
            "KILLSYNC_DATABASE_URL": url,
            "KILLSYNC_ESI_BASE_URL": prov["esi_url"],
            "KILLSYNC_SSO_BASE_URL": prov["sso_url"],
            "KILLSYNC_CLIENT_ID": prov["client_id"],
            "KILLSYNC_CONTACT": "bench@killsync.invalid",
        }
        if prov["client_secret"]:
            env["KILLSYNC_CLIENT_SECRET"] = prov["client_secret"]
        settings = load_settings(environ=env)
        db = Database(url)
        db.upgrade()
        runtime = build_runtime(settings, db, body_concurrency=max(16, concurrency * 4))
        try:
            for login in prov["characters"]:
                runtime.accounts.add_refresh_token(login["refresh_token"])
            if sim.info["summary"]["corporations"]:  # as `users import` does (not timed)
                runtime.corporations.check_due()
            with open_broker(settings, db) as broker:
                options = WorkerOptions(concurrency=concurrency, drain=True)

                def drain() -> object:
                    return run_worker(
                        settings, db, broker, options, stop=threading.Event(), runtime=runtime
                    )

                wall = sync_all(db, broker, drain)
                first = sim.ask("stats")
                result = figures(name, sim.info, wall, first)
                result["complete"] = stored_killmails(db) == result["unique_killmails"]
                if name == "incremental":
                    result["incremental"] = incremental(sim, db, broker, drain, first, new_kills)
        finally:
            runtime.close()
            db.close()
            cleanup()
    sim.stop()
    result["database"] = database
    result["concurrency"] = concurrency
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def stored_killmails(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Killmail)) or 0)


def count(stats: dict[str, Any], route: str, status: int | None = None) -> int:
    return sum(
        n
        for key, n in stats["requests"].items()
        if key.rsplit(" ", 1)[0] == route and (status is None or key.endswith(f" {status}"))
    )


def figures(name: str, info: dict[str, Any], wall: float, stats: dict[str, Any]) -> dict[str, Any]:
    summary = info["summary"]
    bound = summary["min_sync_time_s"]
    by_status: dict[str, int] = {}
    for key, n in stats["requests"].items():
        status = key.rsplit(" ", 1)[1]
        by_status[status] = by_status.get(status, 0) + n
    return {
        "scenario": name,
        "characters": summary["characters"],
        # what the characters' lists hold, and what only the corporations' lists hold
        "unique_killmails": summary["listed_killmails"] + summary["corporation_only_killmails"],
        "list_pages": summary["list_pages"],
        "wall_s": round(wall, 2),
        "lower_bound_s": round(bound, 2),
        "ratio": round(wall / bound, 3) if bound else None,
        "requests_by_status": dict(sorted(by_status.items())),
        "429": by_status.get("429", 0),
        "420": by_status.get("420", 0),
        "bodies_fetched_twice": stats["bodies_fetched_twice"],
        "bodies_per_s": round(count(stats, BODY, 200) / wall, 1) if wall else None,
        "peak_concurrent_requests": stats["peak_concurrent"],
    }


def incremental(
    sim: SimProcess,
    db: Database,
    broker: Any,
    drain: Callable[[], object],
    before: dict[str, Any],
    k: int,
) -> dict[str, Any]:
    time.sleep(sim.info["list_cache_s"] + 1)
    sync_all(db, broker, drain)
    quiet = sim.ask("stats")
    sim.ask("add_kills", k)
    time.sleep(sim.info["list_cache_s"] + 1)
    sync_all(db, broker, drain)
    after = sim.ask("stats")
    return {
        "resync_list_304": count(quiet, LIST, 304) - count(before, LIST, 304),
        "resync_list_200": count(quiet, LIST, 200) - count(before, LIST, 200),
        "resync_bodies": count(quiet, BODY) - count(before, BODY),
        "new_kills": k,
        "bodies_after_new_kills": count(after, BODY) - count(quiet, BODY),
    }


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'scenario':<12}{'db':<11}{'chars':>6}{'kms':>7}{'wall s':>9}{'bound s':>9}"
        f"{'ratio':>7}{'429':>5}{'420':>5}{'twice':>6}{'bodies/s':>10}{'RSS MiB':>9}"
        f"{'complete':>9}"
    )
    print(head)
    for r in results:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(
            f"{r['scenario']:<12}{r['database']:<11}{r['characters']:>6}"
            f"{r['unique_killmails']:>7}{r['wall_s']:>9.2f}{r['lower_bound_s']:>9.2f}"
            f"{ratio:>7}{r['429']:>5}{r['420']:>5}{r['bodies_fetched_twice']:>6}"
            f"{r['bodies_per_s'] or 0:>10.1f}{r['peak_rss_mib']:>9.1f}"
            f"{'yes' if r['complete'] else 'NO':>9}"
        )
        if "incremental" in r:
            print(f"  incremental: {json.dumps(r['incremental'])}")
        print(f"  requests by status: {json.dumps(r['requests_by_status'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="+")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--killmails", type=int, help="override the scenario's killmails")
    parser.add_argument("--characters", type=int, help="override the scenario's characters")
    parser.add_argument(
        "--sample-memory",
        type=float,
        metavar="S",
        help="print a memory timeline to stderr every S seconds",
    )
    args = parser.parse_args()
    overrides = {k: v for k in ("killmails", "characters") if (v := getattr(args, k))}
    stop_sampling = threading.Event()
    if args.sample_memory:
        threading.Thread(
            target=sample_memory, args=(args.sample_memory, stop_sampling), daemon=True
        ).start()
    results = [
        run_scenario(
            name,
            database=args.database,
            concurrency=args.concurrency,
            pg_admin=args.pg,
            overrides=overrides,
        )
        for name in args.scenarios
    ]
    stop_sampling.set()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
