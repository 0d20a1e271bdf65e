"""Each worker's last view of ESI, kept in the database for `killsync stats`.

`stats` runs in another process (often on another host) than the workers, so the rate
limiter's state is written to ``worker_status``: at most every few seconds after a job, and
removed when the worker stops. Only the shared buckets are kept, not the one-per-character
list buckets (there can be thousands): those are summarized as a count and a minimum.
The per-IP buckets are shared by every worker of one egress: each row names its egress and
the block it holds, and `stats` adds the ledger's totals per egress
(:func:`killcli.stats.egress_budgets`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from killcli.db import Database
from killcli.db.models import WorkerStatus, table_of
from killcli.db.store import dialect_insert
from killcli.db.types import utcnow
from killcli.errors import KillsyncError
from killcli.esi.ratelimit import LimiterSnapshot, RateLimiter
from killcli.holders import this_host
from killcli.ticker import Ticker

STATUS = table_of(WorkerStatus)
WRITE_EVERY_S = 5.0
LIVE_WITHIN = timedelta(minutes=2)


def limiter_view(snapshot: LimiterSnapshot) -> dict[str, Any]:
    """The JSON kept for `stats`: shared buckets in full, per-character ones summarized."""
    shared = [b for b in snapshot.buckets if b.key.owner is None]
    per_character = [b for b in snapshot.buckets if b.key.owner is not None]
    lowest = min(
        (b.available_tokens for b in per_character if b.available_tokens is not None), default=None
    )
    return {
        "error_limit_remain": snapshot.error_limit_remain,
        "paused_for_s": round(snapshot.paused_for_s, 1),
        "buckets": [
            {
                "bucket": b.key.label(),
                "limit": b.limit_tokens,
                "window_s": b.window_s,
                "available": b.available_tokens,
            }
            for b in shared
        ],
        "character_buckets": len(per_character),
        "character_buckets_lowest": lowest,
        "waited_s": {k: round(v, 1) for k, v in snapshot.waited_s.items()},
        "egress": None if snapshot.shared is None else snapshot.shared.get("egress"),
        "shared": None if snapshot.shared is None else dict(snapshot.shared),
    }


class StatusReporter:
    """Writes this worker's row; thread-safe and throttled."""

    def __init__(self, db: Database, limiter: RateLimiter | None) -> None:
        self.db = db
        self.limiter = limiter
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"
        self.started_at = utcnow()
        self.jobs = 0
        self._lock = threading.Lock()

    def job_done(self) -> None:
        with self._lock:
            self.jobs += 1

    def keep_writing(self) -> Ticker:
        """A ticker writing the row every :data:`WRITE_EVERY_S` (use it as a ``with``
        block): a worker whose syncs wait minutes for the budget still shows in `stats`."""
        return Ticker(WRITE_EVERY_S, self.write, "killsync-worker-status")

    def write(self) -> None:
        esi = limiter_view(self.limiter.snapshot()) if self.limiter else None
        row = {
            "worker_id": self.worker_id,
            "host": this_host(),  # as in lease owners (killcli.holders)
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": utcnow(),
            "jobs_handled": self.jobs,
            "esi": esi,
        }
        try:
            with self.db.session() as session:
                stmt = dialect_insert(session, STATUS).values(row)
                session.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[STATUS.c.worker_id],
                        set_={k: stmt.excluded[k] for k in ("updated_at", "jobs_handled", "esi")},
                    )
                )
        except KillsyncError:
            pass  # status is informational: never fail a job over it

    def remove(self) -> None:
        try:
            with self.db.session() as session:
                session.execute(delete(STATUS).where(STATUS.c.worker_id == self.worker_id))
        except KillsyncError:
            pass


def live_workers(db: Database, now: datetime | None = None) -> list[dict[str, Any]]:
    """Workers that reported recently, newest first."""
    since = (now or utcnow()) - LIVE_WITHIN
    with db.session() as session:
        rows = (
            session.execute(
                select(STATUS)
                .where(STATUS.c.updated_at >= since)
                .order_by(STATUS.c.updated_at.desc())
            )
            .mappings()
            .all()
        )
        return [dict(row) for row in rows]
