"""Several `killsync worker --drain` processes against one simulator (issue 11's targets).

    .venv/bin/python bench/bench_fleet.py [--database sqlite,postgresql] [--workers 1,3]
    .venv/bin/python bench/bench_fleet.py --egress 3        # workers on 127.0.0.1, .2, .3
    .venv/bin/python bench/bench_fleet.py --sigkill         # kill -9 a worker mid-sync
    .venv/bin/python bench/bench_fleet.py --all --json

Each run starts the scenario's simulator in a child process (as bench/run.py does), a
fresh database (SQLite file, or a new PostgreSQL database) and, on PostgreSQL, a RabbitMQ
queue of its own; then, as an operator would: `killsync db upgrade`, `killsync users
import` of the provisioned refresh tokens (not timed), and the timed sync phase: one
`killsync queue` and N `killsync worker --drain` processes started together. Wall time
runs from the start of `queue` to the exit of the last worker (process start-up
included). Figures come from the simulator (requests by status, 429/420, bodies fetched
more than once, tokens per address) and from the database (every killmail of the
scenario stored and linked to each character that received it).

``--running``: the workers run as services do (`killsync worker`, no ``--drain``), started
and registered on the queue before the timed `queue`, as a fleet is when cron queues a
round; the wall time then runs from the start of `queue` until every killmail of the
scenario is stored and linked (polled every 0.1 s), after which the workers get SIGTERM.

Modes:
- scaling (the default): N = 1 and N = 3 side by side, against the bound of one address.
- ``--egress K``: K workers on one address, then K workers with ``KILLSYNC_SOURCE_ADDRESS``
  127.0.0.1..K, on a scenario resized so that one address needs ~3 killmail-bucket
  windows (``--egress-killmails``, ``--egress-window-s``); the bound with K buckets, the
  ratio, and the speed-up of K addresses over one.
- ``--sigkill``: SIGKILL one of the workers once the simulator has served
  ``--kill-at`` bodies, then at once one `queue` + `worker --drain` round; is the data
  complete when that round (and the surviving workers) end, and if not, after how many
  more rounds (``--round-pause-s`` apart, up to ``--complete-timeout-s``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from bench.children import (  # noqa: E402
    PYTHON,
    Child,
    Children,
    Finished,
    child_environ,
    delete_rabbit_queues,
    exit_on_sigterm,
)
from bench.fleet_report import print_sigkill, print_sync, progress  # noqa: E402
from bench.run import BODY, SimProcess, count, figures, fresh_database  # noqa: E402
from killsim import Scenario, min_sync_time_s  # noqa: E402

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SOURCE_ENV = "KILLSYNC_SOURCE_ADDRESS"
POLL_S = 0.1


@dataclasses.dataclass(frozen=True)
class Options:
    """What every run shares (from the command line)."""

    scenario: str
    seed: int
    concurrency: int | None
    pg_admin: str
    amqp: str
    timeout_s: float
    keep_logs: Path | None = None
    running: bool = False  # workers started (as services) before `queue`


# -- one run: simulator, database, queue, children ----------------------------------------


class FleetRun:
    """A simulator, a fresh database and queue, a data directory and the killsync children."""

    def __init__(self, opts: Options, database: str, overrides: dict[str, Any]) -> None:
        self.opts = opts
        self.database = database
        self.overrides = overrides
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> FleetRun:
        stack = self._stack
        self.sim = SimProcess(self.opts.scenario, self.opts.seed, self.overrides)
        stack.callback(self._stop_sim)
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
        url, drop = fresh_database(self.database, self.tmp, self.opts.pg_admin)
        stack.callback(drop)
        self.url: str = url
        self.queue_name = f"killsync_bench_{secrets.token_hex(4)}"
        if self.database == "postgresql":
            stack.callback(self._delete_rabbit_queues)
        if self.opts.keep_logs is not None:
            stack.callback(self._keep_logs, self.opts.keep_logs)
        self.children = stack.enter_context(Children(self.tmp))
        return self

    def _keep_logs(self, into: Path) -> None:
        """Copy the children's logs (and the SQLite file) before the data directory goes."""
        target = into / f"{self.database}-{self.queue_name}"
        shutil.copytree(self.tmp, target, ignore=shutil.ignore_patterns("home", "tokens.txt"))
        print(f"bench_fleet: logs kept in {target}", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _stop_sim(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.sim.stop()
        if self.sim.process.is_alive():
            self.sim.process.kill()

    def _delete_rabbit_queues(self) -> None:
        delete_rabbit_queues(self.opts.amqp, self.queue_name)

    # -- killsync as an operator runs it ---------------------------------------------------

    def env(self, source_address: str | None = None) -> dict[str, str]:
        prov = self.sim.info["provisioned"]
        settings = {
            "KILLSYNC_HOME": str(self.tmp / "home"),
            "KILLSYNC_DATABASE_URL": self.url,
            "KILLSYNC_ESI_BASE_URL": prov["esi_url"],
            "KILLSYNC_SSO_BASE_URL": prov["sso_url"],
            "KILLSYNC_CLIENT_ID": prov["client_id"],
            "KILLSYNC_CONTACT": "bench@killsync.invalid",
            "KILLSYNC_QUEUE_NAME": self.queue_name,
            "KILLSYNC_BROKER_URL": self.opts.amqp if self.database == "postgresql" else "database",
        }
        if prov["client_secret"]:
            settings["KILLSYNC_CLIENT_SECRET"] = prov["client_secret"]
        if source_address is not None:
            settings[SOURCE_ENV] = source_address
        return child_environ(settings)

    def setup(self) -> None:
        """`db upgrade` and `users import` of every provisioned token (not timed)."""
        tokens = self.tmp / "tokens.txt"
        tokens.touch(mode=0o600)
        logins = self.sim.info["provisioned"]["characters"]
        tokens.write_text("".join(c["refresh_token"] + "\n" for c in logins))
        for name, args in (
            ("upgrade", ["db", "upgrade"]),
            ("import", ["users", "import", str(tokens)]),
        ):
            done = self.children.run(name, args, self.env(), self.opts.timeout_s)
            if done.exit_code != 0:
                raise RuntimeError(
                    f"killsync {' '.join(args)} failed ({done.exit_code}):\n{done.tail}"
                )

    def queue(self, name: str = "queue") -> Finished:
        return self.children.run(name, ["queue", "--quiet"], self.env(), self.opts.timeout_s)

    def start_workers(
        self, addresses: list[str | None], prefix: str = "worker", *, drain: bool = True
    ) -> list[Child]:
        args = ["worker", "--drain"] if drain else ["worker"]
        if self.opts.concurrency:
            args += ["--concurrency", str(self.opts.concurrency)]
        return [
            self.children.start(f"{prefix}{i}", args, self.env(address))
            for i, address in enumerate(addresses)
        ]

    def wait(self, workers: list[Child], deadline: float) -> list[Finished]:
        return self.children.wait_all(workers, deadline)

    def sync_phase(self, addresses: list[str | None]) -> tuple[float, Finished, list[Finished]]:
        """One `queue`, then the workers together; wall time until the last one exits
        (``--running``: the workers first, then `queue`, until the data is complete)."""
        if self.opts.running:
            return self._running_phase(addresses)
        start = time.monotonic()
        queued = self.queue()
        workers = self.start_workers(addresses)
        finished = self.wait(workers, start + self.opts.timeout_s)
        return time.monotonic() - start, queued, finished

    def _running_phase(self, addresses: list[str | None]) -> tuple[float, Finished, list[Finished]]:
        workers = self.start_workers(addresses, drain=False)
        deadline = time.monotonic() + self.opts.timeout_s
        while self.consumers() < len(workers):
            if time.monotonic() > deadline or any(w.process.poll() is not None for w in workers):
                raise RuntimeError("the workers did not all start consuming")
            time.sleep(POLL_S)
        start = time.monotonic()
        queued = self.queue()
        while not self.completeness()["complete"] and time.monotonic() < deadline:
            time.sleep(POLL_S)
        wall = time.monotonic() - start
        for worker in workers:  # SIGTERM: they finish what runs, then exit 0
            worker.process.terminate()
        return wall, queued, self.wait(workers, time.monotonic() + 60)

    def consumers(self) -> int:
        """Consumers on the run's queue: RabbitMQ's count, or the database queue's leases."""
        if self.database == "postgresql":
            connection = pika.BlockingConnection(pika.URLParameters(self.opts.amqp))
            try:
                frame = connection.channel().queue_declare(self.queue_name, passive=True)
                return int(frame.method.consumer_count or 0)
            except pika.exceptions.ChannelClosedByBroker:
                return 0  # not declared yet
            finally:
                with contextlib.suppress(Exception):
                    connection.close()
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                live = conn.execute(
                    text(
                        "SELECT count(*) FROM leases"
                        " WHERE name LIKE 'consumer:%' AND expires_at > :now"
                    ),
                    {"now": datetime.now(UTC).replace(tzinfo=None)},
                )
                return int(live.scalar() or 0)
        except Exception:  # noqa: BLE001 - the table may not be there yet
            return 0
        finally:
            engine.dispose()

    # -- what happened ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.sim.ask("stats")
        return stats

    def completeness(self) -> dict[str, int | bool]:
        """Killmails and links of the scenario missing from the database."""
        truth: dict[int, list[int]] = self.sim.ask("truth")
        want_links = {(c, k) for c, rows in truth.items() for k in rows}
        want_ids = {k for _, k in want_links}
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                ids = {row[0] for row in conn.execute(text("SELECT killmail_id FROM killmails"))}
                links = {
                    (row[0], row[1])
                    for row in conn.execute(
                        text("SELECT character_id, killmail_id FROM character_killmails")
                    )
                }
                pending = conn.execute(text("SELECT count(*) FROM pending_killmails")).scalar()
        finally:
            engine.dispose()
        missing_ids, missing_links = len(want_ids - ids), len(want_links - links)
        return {
            "complete": not missing_ids and not missing_links,
            "missing_killmails": missing_ids,
            "missing_links": missing_links,
            "pending_killmails": int(pending or 0),
        }


def exits(finished: list[Finished]) -> dict[str, Any]:
    """Exit codes of workers (None: killed by the timeout) and the tail of failures."""
    failures = {f.name: f.tail for f in finished if f.exit_code not in (0, -9)}
    return {
        "exit_codes": [f.exit_code for f in finished],
        **({"failures": failures} if failures else {}),
    }


def sync_figures(
    run: FleetRun, wall: float, queued: Finished, finished: list[Finished]
) -> dict[str, Any]:
    stats = run.stats()
    result = figures(run.opts.scenario, run.sim.info, wall, stats)
    result.update(
        database=run.database,
        workers=len(finished),
        load_1m=os.getloadavg()[0],
        concurrency=run.opts.concurrency,
        queue_s=round(queued.seconds, 2),
        bodies_200=count(stats, BODY, 200),
        killmail_tokens_by_address=stats["tokens_by_key"].get("killmail", {}),
        **run.completeness(),
        **exits([queued, *finished]),
    )
    return result


# -- the three modes ----------------------------------------------------------------------


def scaling(
    opts: Options, database: str, workers: list[int], overrides: dict[str, Any]
) -> list[dict[str, Any]]:
    results = []
    for n in workers:
        with FleetRun(opts, database, overrides) as run:
            run.setup()
            wall, queued, finished = run.sync_phase([None] * n)
            results.append({"mode": "scaling", **sync_figures(run, wall, queued, finished)})
    return results


def source_address_supported() -> bool:
    """Whether `killsync config show` knows KILLSYNC_SOURCE_ADDRESS (asked each time: the
    setting is being added while these benches are written)."""
    with tempfile.TemporaryDirectory() as home:
        env = child_environ({"KILLSYNC_HOME": home, SOURCE_ENV: "127.0.0.2"})
        try:
            done = subprocess.run(
                [str(PYTHON), "-m", "killcli", "config", "show", "--json"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                timeout=60,
                check=False,
            )
            settings = json.loads(done.stdout)["data"]["settings"]
        except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
            return False
    return any(s.get("env") == SOURCE_ENV for s in settings)


def bound_with_addresses(info: dict[str, Any], addresses: int) -> float:
    """The scenario's bound when the IP-keyed killmail bucket is ``addresses`` buckets
    (bodies split evenly; per-character list buckets unchanged), as World computes it."""
    summary, buckets = info["summary"], info["buckets"]
    bounds = [0.0]
    if "char-killmail" in buckets:
        limit, window = buckets["char-killmail"]
        pages = summary["max_pages_per_character"]
        bounds.append(min_sync_time_s(limit, window, tokens_needed=2 * pages))
    if "killmail" in buckets:
        limit, window = buckets["killmail"]
        share = math.ceil(summary["listed_killmails"] / addresses)
        bounds.append(min_sync_time_s(limit, window, tokens_needed=2 * share))
    return max(bounds)


def egress(opts: Options, database: str, k: int, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    supported = source_address_supported()
    plans: list[tuple[str, list[str | None]]] = [("1 address", [None] * k)]
    if supported:
        plans.append((f"{k} addresses", [f"127.0.0.{i + 1}" for i in range(k)]))
    results = []
    for label, addresses in plans:
        with FleetRun(opts, database, overrides) as run:
            run.setup()
            wall, queued, finished = run.sync_phase(addresses)
            result = sync_figures(run, wall, queued, finished)
            n_addr = len({a for a in addresses if a}) or 1
            bound = bound_with_addresses(run.sim.info, n_addr)
            result.update(
                mode="egress",
                egress=label,
                addresses=n_addr,
                source_address_supported=supported,
                one_address_bound_s=round(run.sim.info["summary"]["min_sync_time_s"], 2),
                lower_bound_s=round(bound, 2),
                ratio=round(wall / bound, 3) if bound else None,
            )
            results.append(result)
    if len(results) > 1:  # one address, then k addresses
        one, many = results[0]["wall_s"], results[1]["wall_s"]
        results[1]["speedup_vs_one_address"] = round(one / many, 2) if many else None
    return results


def wait_for_bodies(run: FleetRun, workers: list[Child], kill_at: int, deadline: float) -> bool:
    """Poll the simulator until it served ``kill_at`` bodies (False: workers ended first)."""
    while time.monotonic() < deadline:
        if count(run.stats(), BODY, 200) >= kill_at:
            return True
        if all(w.process.poll() is not None for w in workers):
            return False
        time.sleep(POLL_S)
    return False


def rounds_until_complete(
    run: FleetRun, since: float, pause_s: float, timeout_s: float
) -> tuple[int, float | None]:
    """More `queue` + `worker --drain` rounds until the data is complete."""
    rounds = 0
    while time.monotonic() - since < timeout_s:
        time.sleep(pause_s)
        rounds += 1
        run.queue(f"queue-extra{rounds}")
        worker = run.start_workers([None], prefix=f"worker-extra{rounds}-")
        run.wait(worker, since + timeout_s)
        if run.completeness()["complete"]:
            return rounds, time.monotonic() - since
    return rounds, None


def sigkill(
    opts: Options,
    database: str,
    n: int,
    kill_fraction: float,
    pause_s: float,
    complete_timeout_s: float,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    with FleetRun(opts, database, overrides) as run:
        run.setup()
        kill_at = max(1, int(run.sim.info["summary"]["listed_killmails"] * kill_fraction))
        start = time.monotonic()
        queued = run.queue()
        workers = run.start_workers([None] * n)
        result: dict[str, Any] = {
            "mode": "sigkill",
            "database": database,
            "workers": n,
            "kill_at_bodies": kill_at,
            "queue_exit": queued.exit_code,
        }
        if not wait_for_bodies(run, workers, kill_at, start + opts.timeout_s):
            run.wait(workers, start + opts.timeout_s)
            return {**result, "killed": False, **run.completeness()}
        # A worker still running (one that drained its share already has nothing to lose).
        victim = next((w for w in workers if w.process.poll() is None), workers[0])
        run.children.sigkill(victim)
        killed = time.monotonic()
        result.update(
            killed=True,
            killed_after_s=round(killed - start, 2),
            bodies_at_kill=count(run.stats(), BODY, 200),
        )
        queued = run.queue("queue-round")  # at once, as cron or a process manager would
        extra = run.start_workers([None], prefix="worker-round")
        finished = run.wait([*workers, *extra], killed + opts.timeout_s)
        result.update(
            round_s=round(time.monotonic() - killed, 2),
            round_own_s=round(queued.seconds + finished[-1].seconds, 2),
            **exits([queued, *finished]),
            **run.completeness(),
        )
        if not result["complete"]:
            rounds, took = rounds_until_complete(run, killed, pause_s, complete_timeout_s)
            result.update(
                extra_rounds=rounds,
                complete_after_s=None if took is None else round(took, 2),
                final=run.completeness(),
            )
        stats = run.stats()
        result["load_1m"] = os.getloadavg()[0]
        result.update(
            {
                k: v
                for k, v in figures(opts.scenario, run.sim.info, 0.0, stats).items()
                if k in ("429", "420", "bodies_fetched_twice", "requests_by_status")
            }
        )
        return result


# -- command line -------------------------------------------------------------------------


def _ints(text_value: str) -> list[int]:
    return [int(part) for part in text_value.split(",") if part]


def _names(text_value: str) -> list[str]:
    names = [part for part in text_value.split(",") if part]
    for name in names:
        if name not in ("sqlite", "postgresql"):
            raise argparse.ArgumentTypeError(f"not a database kind: {name}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--database",
        type=_names,
        default=["sqlite", "postgresql"],
        help="sqlite, postgresql or both (comma-separated; default both)",
    )
    p.add_argument("--workers", type=_ints, default=[1, 3], help="worker counts (default 1,3)")
    p.add_argument("--scenario", default="fleet")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--killmails", type=int, help="override the scenario's killmails")
    p.add_argument("--characters", type=int, help="override the scenario's characters")
    p.add_argument("--concurrency", type=int, help="each worker's --concurrency (default: its own)")
    p.add_argument("--egress", type=int, metavar="K", help="K workers on 1 vs K source addresses")
    p.add_argument(
        "--egress-killmails",
        type=int,
        default=1150,
        help="killmails of the egress scenario (one address: ~3 windows)",
    )
    p.add_argument(
        "--egress-window-s",
        type=int,
        default=30,
        help="the killmail bucket's window in the egress scenario (ESI's: 900)",
    )
    p.add_argument("--sigkill", action="store_true", help="kill -9 a worker mid-sync")
    p.add_argument("--sigkill-workers", type=int, default=3)
    p.add_argument(
        "--kill-at",
        type=float,
        default=0.25,
        help="kill once this fraction of the bodies was served",
    )
    p.add_argument("--round-pause-s", type=float, default=10.0)
    p.add_argument(
        "--complete-timeout-s",
        type=float,
        default=360.0,
        help="stop the extra rounds after a SIGKILL this long after the kill",
    )
    p.add_argument(
        "--running",
        action="store_true",
        help="scaling and egress: workers running (no --drain) before `queue`",
    )
    p.add_argument("--all", action="store_true", help="scaling, --egress 3 and --sigkill")
    p.add_argument("--timeout-s", type=float, default=300.0, help="bound of each sync phase")
    p.add_argument("--pg", default=PG_ADMIN)
    p.add_argument("--amqp", default=AMQP)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--keep-logs",
        type=Path,
        metavar="DIR",
        help="copy each run's child logs (and SQLite file) into DIR",
    )
    args = p.parse_args(argv)
    if args.all:
        args.egress = args.egress or 3
        args.sigkill = True
    return args


@contextlib.contextmanager
def announced(what: str) -> Iterator[None]:
    print(f"bench_fleet: {what} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    yield
    print(f"bench_fleet: {what}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def egress_overrides(args: argparse.Namespace) -> dict[str, Any]:
    buckets = dict(Scenario.named(args.scenario, seed=args.seed).buckets)
    limit, _ = buckets["killmail"]
    buckets["killmail"] = (limit, args.egress_window_s)
    return {"killmails": args.egress_killmails, "buckets": buckets}


def main(argv: list[str] | None = None) -> None:
    exit_on_sigterm()
    args = parse_args(argv)
    opts = Options(
        args.scenario,
        args.seed,
        args.concurrency,
        args.pg,
        args.amqp,
        args.timeout_s,
        args.keep_logs,
        args.running,
    )
    overrides = {k: v for k in ("killmails", "characters") if (v := getattr(args, k))}
    run_scaling = args.all or not (args.egress or args.sigkill)
    sync_results: list[dict[str, Any]] = []
    kill_results: list[dict[str, Any]] = []
    for database in args.database:
        if run_scaling:
            with announced(f"{database}: {args.workers} workers"):
                sync_results += progress(scaling(opts, database, args.workers, overrides))
        if args.egress:
            with announced(f"{database}: egress {args.egress}"):
                sync_results += progress(
                    egress(opts, database, args.egress, egress_overrides(args))
                )
        if args.sigkill:
            with announced(f"{database}: sigkill"):
                kill_results += progress(
                    [
                        sigkill(
                            opts,
                            database,
                            args.sigkill_workers,
                            args.kill_at,
                            args.round_pause_s,
                            args.complete_timeout_s,
                            overrides,
                        )
                    ]
                )
    if args.json:  # the data on stdout, the table on stderr
        print(json.dumps(sync_results + kill_results, indent=2))
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        if sync_results:
            print_sync(sync_results)
        if kill_results:
            print_sigkill(kill_results)


if __name__ == "__main__":
    main()
