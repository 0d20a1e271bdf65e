"""Re-sync rate of one worker process when nothing is new: characters per second.

    .venv/bin/python bench/bench_resync.py [--characters 2000 | --large] [--database both]
        [--concurrency N] [--json]

N characters (default 2,000; ``--large``: 20,000), one page of killmails each, in the
simulator (a child process) with 30-80 ms of latency on every ESI answer. killsync runs as
an operator runs it, each command its own process with default settings: `db upgrade` and
`users import` (not timed), a first `queue` + `worker --drain` that fills the database
(not timed), then, once every list's cache expired, the timed round: `killsync queue --all`
and `killsync worker --drain`, where every list answers 304 and no body is fetched.

Printed per deployment (SQLite + database queue, PostgreSQL + RabbitMQ): seconds of
`queue --all` and of `worker --drain`, characters/s of the drain and of the whole round,
and characters/s of the drain net of a worker's start-up (a `worker --drain` on an empty
queue, measured just before). The issue's target is >= 400 characters/s per worker process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.children import (  # noqa: E402
    Children,
    Finished,
    child_environ,
    delete_rabbit_queues,
    exit_on_sigterm,
    process_cpu_s,
)
from bench.run import BODY, LIST, SimProcess, count, fresh_database  # noqa: E402
from killsim import FaultPlan  # noqa: E402

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LATENCY = FaultPlan(latency_ms=55, jitter_ms=25)  # 30-80 ms on every ESI answer
LIST_CACHE_S = 2  # short, so the timed round can start soon after the fill
DEPLOYMENTS = {"sqlite": "database", "postgresql": "rabbitmq"}


@dataclass(frozen=True)
class Options:
    characters: int
    concurrency: int | None
    timeout_s: float
    pg_admin: str
    amqp: str


def scenario_overrides(characters: int) -> dict[str, Any]:
    """One page per character, bodies unthrottled (the fill is not measured), tokens that
    outlive the run (a refresh per character would be measured otherwise)."""
    return {
        "characters": characters,
        "killmails": characters,
        "old_killmails": 0,
        "page_size": 50,
        "list_cache_s": LIST_CACHE_S,
        "access_token_lifetime_s": 86_400,
        "buckets": {"char-killmail": (30, 900), "killmail": (1_000_000, 1), "status": (600, 900)},
        "faults": LATENCY,
    }


class Deployment:
    """One database (+ broker) wired to the simulator, the `killsync` children, cleanup."""

    def __init__(
        self, database: str, sim: SimProcess, opts: Options, tmp: Path, stack: contextlib.ExitStack
    ) -> None:
        self.database, self.sim, self.opts, self.tmp = database, sim, opts, tmp
        self.queue_name = f"killsync_bench_{secrets.token_hex(4)}"
        self.url, drop = fresh_database(database, tmp, opts.pg_admin)
        stack.callback(drop)
        if self.uses_rabbitmq:
            stack.callback(self._delete_rabbit_queues)
        self.children = stack.enter_context(Children(tmp))

    @property
    def uses_rabbitmq(self) -> bool:
        return DEPLOYMENTS[self.database] == "rabbitmq"

    def env(self) -> dict[str, str]:
        prov = self.sim.info["provisioned"]
        settings = {
            "KILLSYNC_HOME": str(self.tmp / "home"),
            "KILLSYNC_DATABASE_URL": self.url,
            "KILLSYNC_ESI_BASE_URL": prov["esi_url"],
            "KILLSYNC_SSO_BASE_URL": prov["sso_url"],
            "KILLSYNC_CLIENT_ID": prov["client_id"],
            "KILLSYNC_CONTACT": "bench@killsync.invalid",
            "KILLSYNC_QUEUE_NAME": self.queue_name,
            "KILLSYNC_BROKER_URL": self.opts.amqp if self.uses_rabbitmq else "database",
        }
        if prov["client_secret"]:
            settings["KILLSYNC_CLIENT_SECRET"] = prov["client_secret"]
        return child_environ(settings)

    def run(self, name: str, *args: str) -> Finished:
        """A `killsync` command as its own process; a failure ends the bench."""
        done = self.children.run(name, list(args), self.env(), self.opts.timeout_s)
        if done.exit_code != 0:
            raise RuntimeError(
                f"killsync {' '.join(args)} ended with {done.exit_code} after "
                f"{done.seconds:.1f} s:\n{done.tail}"
            )
        return done

    def worker(self, name: str) -> Finished:
        extra = (
            [] if self.opts.concurrency is None else ["--concurrency", str(self.opts.concurrency)]
        )
        return self.run(name, "worker", "--drain", *extra)

    def _delete_rabbit_queues(self) -> None:
        delete_rabbit_queues(self.opts.amqp, self.queue_name)


def fill(deployment: Deployment) -> float:
    """Schema, characters and a first full sync; returns its seconds (not the figure)."""
    tokens = deployment.tmp / "tokens.txt"
    tokens.touch(mode=0o600)
    logins = deployment.sim.info["provisioned"]["characters"]
    tokens.write_text("".join(c["refresh_token"] + "\n" for c in logins))
    deployment.run("upgrade", "db", "upgrade")
    deployment.run("import", "users", "import", str(tokens))
    start = time.monotonic()
    deployment.run("queue-fill", "queue", "--quiet")
    deployment.worker("worker-fill")
    return time.monotonic() - start


def resync(deployment: Deployment) -> dict[str, Any]:
    """The timed round: `queue --all` + `worker --drain`, every list a 304."""
    time.sleep(LIST_CACHE_S + 1)  # every list's cache has expired: the worker asks ESI
    startup = deployment.worker("worker-empty").seconds  # a drain with nothing to do
    before = deployment.sim.ask("stats")
    queued = deployment.run("queue-all", "queue", "--all", "--quiet")
    sim_cpu_s = process_cpu_s(deployment.sim.process.pid or 0)
    drained = deployment.worker("worker-resync")
    sim_cpu_s = process_cpu_s(deployment.sim.process.pid or 0) - sim_cpu_s
    after = deployment.sim.ask("stats")
    n = deployment.opts.characters
    return {
        "queue_all_s": round(queued.seconds, 2),
        "drain_s": round(drained.seconds, 2),
        "worker_startup_s": round(startup, 2),
        "chars_per_s": round(n / drained.seconds, 1),
        "chars_per_s_round": round(n / (queued.seconds + drained.seconds), 1),
        "chars_per_s_net_of_startup": round(n / max(drained.seconds - startup, 1e-3), 1),
        "worker_cpu_ms_per_char": round(1000 * (drained.cpu_s or 0.0) / n, 2),
        "sim_cpu_ms_per_char": round(1000 * sim_cpu_s / n, 2),
        "list_304": count(after, LIST, 304) - count(before, LIST, 304),
        "list_200": count(after, LIST, 200) - count(before, LIST, 200),
        "bodies": count(after, BODY) - count(before, BODY),
    }


@contextlib.contextmanager
def simulator(characters: int) -> Iterator[SimProcess]:
    sim = SimProcess("smoke", 1, scenario_overrides(characters))
    try:
        yield sim
    finally:
        with contextlib.suppress(OSError, EOFError):
            sim.stop()
        if sim.process.is_alive():
            sim.process.kill()


def run_deployment(database: str, opts: Options) -> dict[str, Any]:
    with (
        simulator(opts.characters) as sim,
        tempfile.TemporaryDirectory() as tmp,
        contextlib.ExitStack() as stack,
    ):
        deployment = Deployment(database, sim, opts, Path(tmp), stack)
        fill_s = fill(deployment)
        result = resync(deployment)
    return {
        "database": database,
        "broker": DEPLOYMENTS[database],
        "characters": opts.characters,
        "concurrency": opts.concurrency or "default",
        "fill_s": round(fill_s, 1),
        **result,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"{'deployment':<22}{'chars':>7}{'queue s':>9}{'drain s':>9}{'start s':>9}"
        f"{'chars/s':>9}{'round/s':>9}{'net/s':>9}{'304s':>7}{'200s':>6}{'bodies':>7}"
        f"{'cpu ms':>8}{'sim ms':>8}"
    )
    for r in results:
        print(
            f"{r['database'] + ' + ' + r['broker']:<22}{r['characters']:>7}"
            f"{r['queue_all_s']:>9.2f}{r['drain_s']:>9.2f}{r['worker_startup_s']:>9.2f}"
            f"{r['chars_per_s']:>9.1f}{r['chars_per_s_round']:>9.1f}"
            f"{r['chars_per_s_net_of_startup']:>9.1f}{r['list_304']:>7}{r['list_200']:>6}"
            f"{r['bodies']:>7}{r['worker_cpu_ms_per_char']:>8.2f}{r['sim_cpu_ms_per_char']:>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--characters", type=int, default=2000)
    parser.add_argument("--large", action="store_true", help="20,000 characters")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--concurrency", type=int, help="worker --concurrency (default: the worker's own default)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per command, seconds")
    parser.add_argument("--pg", default=PG_ADMIN)
    parser.add_argument("--amqp", default=AMQP)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()
    opts = Options(
        20_000 if args.large else args.characters,
        args.concurrency,
        args.timeout,
        args.pg,
        args.amqp,
    )
    databases = list(DEPLOYMENTS) if args.database == "both" else [args.database]
    results = [run_deployment(database, opts) for database in databases]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
