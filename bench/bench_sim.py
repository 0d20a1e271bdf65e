"""How many requests per second the simulator sustains on this machine.

    .venv/bin/python bench/bench_sim.py [--seconds 5] [--processes 1] [--threads 8]

Starts a simulator with limits that never bite, then load processes (``http.client``, one
keep-alive connection per thread) fetch killmail bodies round-robin for the given
time. The load runs in other processes so that it does not share the server's GIL.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import sys
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.queues import Queue
from pathlib import Path
from types import MappingProxyType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from killsim.scenario import Scenario  # noqa: E402
from killsim.server import SimServer  # noqa: E402

_UNLIMITED = MappingProxyType(dict.fromkeys(("char-killmail", "killmail", "status"), (10**9, 900)))


@dataclass(frozen=True)
class BenchResult:
    """Answers counted during the measured window."""

    requests: int
    errors: int
    seconds: float
    connections: int

    @property
    def requests_per_s(self) -> float:
        """Successful answers per second of measured time."""
        return self.requests / self.seconds if self.seconds else 0.0


def _load(
    port: int, paths: list[str], threads: int, seconds: float, out: Queue[tuple[int, int, float]]
) -> None:
    """One load process: ``threads`` keep-alive connections for ``seconds``."""
    counts = [[0, 0] for _ in range(threads)]
    started = time.monotonic()
    deadline = started + seconds

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"User-Agent": "killsync-bench", "X-Compatibility-Date": "2025-08-26"}
        n = index
        try:
            while time.monotonic() < deadline:
                conn.request("GET", paths[n % len(paths)], headers=headers)
                response = conn.getresponse()
                response.read()
                counts[index][0 if response.status == 200 else 1] += 1
                n += threads
        finally:
            conn.close()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started
    out.put((sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed))


def run_bench(
    *, seconds: float = 5.0, processes: int = 1, threads: int = 8, scenario: Scenario | None = None
) -> BenchResult:
    """Measure sustained body fetches per second against a fresh simulator."""
    base = scenario or Scenario.named("smoke")
    chosen = replace(base, buckets=_UNLIMITED, error_limit=10**9)
    with SimServer(chosen) as sim:
        paths = [f"/killmails/{k}/{r.killmail_hash}" for k, r in sim.world.killmails.items()]
        context = multiprocessing.get_context("spawn")
        queue: Queue[tuple[int, int, float]] = context.Queue()
        loaders = [
            context.Process(target=_load, args=(sim.port, paths, threads, seconds, queue))
            for _ in range(processes)
        ]
        for proc in loaders:
            proc.start()
        results = [queue.get(timeout=seconds + 60) for _ in loaders]
        for proc in loaders:
            proc.join()
    elapsed = max(r[2] for r in results)
    return BenchResult(
        sum(r[0] for r in results), sum(r[1] for r in results), elapsed, processes * threads
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; prints one line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    result = run_bench(seconds=args.seconds, processes=args.processes, threads=args.threads)
    print(
        f"{result.requests_per_s:.0f} requests/s ({result.requests} bodies, {result.errors} "
        f"errors, {result.connections} keep-alive connections, {args.seconds:g} s)"
    )


if __name__ == "__main__":
    main()
