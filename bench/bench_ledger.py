"""What the shared ESI budget costs the database: microseconds per token, SQLite and PostgreSQL.

    .venv/bin/python bench/bench_ledger.py [--leases 2000] [--block 12] [--takers 1]

Each lease is the steady-state transaction of :class:`killcli.esi.ledger.EgressLedger`:
lock the budget row, close the taker's previous block, drop expired blocks, sum the live
ones (about 50 of them, as with blocks of 1/50 of the bucket), insert the next block.
``--takers N`` runs N threads on one egress at once (N processes contending for one row).
Prints µs per lease and per token (a token is what one request of 2 tokens costs half of).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import fresh_database  # noqa: E402
from killcli.db import Database  # noqa: E402
from killcli.esi.ledger import BlockClose, EgressLedger, Grant  # noqa: E402

WINDOW_S = 0.1  # short: about 40 live blocks at these rates, as in real use


def take(db: Database, owner: str, leases: int, block: int) -> None:
    """``leases`` blocks in a row, each closing the one before (spent in full)."""
    ledger = EgressLedger(db, "bench-egress", owner)
    previous: Grant | None = None
    for _ in range(leases):
        closing = (
            ()
            if previous is None
            else (BlockClose(previous.block_id, block, time.time() + WINDOW_S),)
        )
        answer = ledger.lease(
            "killmail",
            tokens=block,
            limit_tokens=10**9,
            window_s=WINDOW_S,
            margin=2,
            hold_s=WINDOW_S,
            closing=closing,
        )
        assert isinstance(answer, Grant)
        previous = answer


def measure(kind: str, leases: int, block: int, takers: int, pg_admin: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        url, cleanup = fresh_database(kind, Path(tmp), pg_admin)
        db = Database(url)
        try:
            db.upgrade()
            take(db, "warm-up", 50, block)
            threads = [
                threading.Thread(target=take, args=(db, f"taker-{i}", leases, block))
                for i in range(takers)
            ]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - start
        finally:
            db.close()
            cleanup()
    total = leases * takers
    return (
        f"{kind:<11} takers {takers}  block {block:>3} tokens  "
        f"{elapsed / total * 1e6:8.0f} µs/lease  {elapsed / (total * block) * 1e6:6.1f} "
        f"µs/token  ({total / elapsed:,.0f} leases/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=2000, help="per taker")
    parser.add_argument("--block", type=int, default=12, help="tokens per block")
    parser.add_argument("--takers", type=int, default=1)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    for kind in kinds:
        print(measure(kind, args.leases, args.block, args.takers, args.pg), flush=True)


if __name__ == "__main__":
    main()
