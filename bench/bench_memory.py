"""Peak RSS of a worker as the number of killmails grows: is it flat?

Runs `bench/run.py fleet --killmails N --json` once per N, each in a fresh process (peak
RSS is a per-process high-water mark, so runs must not share one), with
``MALLOC_ARENA_MAX=2`` as examples/systemd sets it. Prints peak RSS per N, its ratio to the
first N, the growth per killmail since the previous N (flat means close to 0 KiB), and
the fleet figures of each run:

    .venv/bin/python bench/bench_memory.py [--killmails 1000,20000,40000] [--database sqlite]

Add ``--sample 10`` to have each run print a memory timeline every 10 s (RSS, malloc in
use and free, SQLite's own allocations, Python's allocated blocks): that is how to find
what grows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(
    killmails: int, database: str, concurrency: int, sample: float | None, characters: int | None
) -> dict[str, object]:
    command = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "fleet",
        "--json",
        "--killmails",
        str(killmails),
        "--database",
        database,
        "--concurrency",
        str(concurrency),
    ]
    if characters:
        command += ["--characters", str(characters)]
    if sample:
        command += ["--sample-memory", str(sample)]
    env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench/run.py failed for {killmails} killmails:\n{done.stderr}")
    if sample:
        sys.stderr.write(done.stderr)
    result: dict[str, object] = json.loads(done.stdout)[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--killmails",
        default="1000,20000,40000",
        help="comma-separated sizes of the fleet scenario",
    )
    parser.add_argument("--characters", type=int, help="override the scenario's characters")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sample", type=float, help="print a memory timeline every S seconds")
    args = parser.parse_args()
    sizes = [int(n) for n in args.killmails.split(",")]
    print(
        f"{'killmails':>10}{'chars':>7}{'wall s':>9}{'ratio':>7}{'429':>5}{'420':>5}"
        f"{'twice':>6}{'peak RSS MiB':>14}{'vs first':>10}{'KiB/killmail':>14}",
        flush=True,
    )
    first: tuple[int, float] | None = None
    previous: tuple[int, float] | None = None
    for size in sizes:
        r = run_one(size, args.database, args.concurrency, args.sample, args.characters)
        rss = float(r["peak_rss_mib"])  # type: ignore[arg-type]
        first = first or (size, rss)
        slope = (
            "-"
            if previous is None or size == previous[0]
            else f"{(rss - previous[1]) * 1024 / (size - previous[0]):.2f}"
        )
        print(
            f"{size:>10}{r['characters']:>7}{r['wall_s']:>9}{r['ratio']!s:>7}{r['429']:>5}"
            f"{r['420']:>5}{r['bodies_fetched_twice']:>6}{rss:>14.1f}"
            f"{rss / first[1]:>10.2f}{slope:>14}",
            flush=True,
        )
        previous = (size, rss)


if __name__ == "__main__":
    main()
