"""`killsync demo`: the real pipeline against the bundled ESI simulator, in under a minute.

It starts the simulator in-process, provisions its characters into a fresh embedded
database (a temporary directory unless a database URL is given), then runs what an
operator runs: ``queue`` -> ``worker --drain`` -> ``stats``. Nothing here is a shortcut:
tokens are refreshed through the simulated SSO, every list and body comes over HTTP
through the rate limiter, and killmails are saved by the same engine as in production.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from killcli.config import Settings, load_settings
from killcli.db import Database
from killcli.errors import UsageError
from killcli.queue import open_broker
from killcli.runtime import build_runtime
from killcli.scheduler import run_queue
from killcli.service import WorkerOptions, run_worker
from killcli.stats import Stats, collect_stats
from killcli.worker import JobReport

if TYPE_CHECKING:
    from killsim import SimServer

DEMO_SCENARIO = "smoke"


@dataclass(frozen=True)
class DemoResult:
    settings: Settings
    characters: int
    jobs: int
    stats: Stats
    elapsed_s: float
    esi_requests: int
    bodies_fetched_twice: int

    def as_dict(self) -> dict[str, Any]:
        """The ``demo`` JSON payload."""
        return {
            "characters": self.characters,
            "jobs": self.jobs,
            "killmails": self.stats.killmails_total,
            "esi_requests": self.esi_requests,
            "bodies_fetched_twice": self.bodies_fetched_twice,
            "elapsed_s": round(self.elapsed_s, 2),
            "database_url": self.settings.database_url,
            "home": str(self.settings.home),
        }


def demo_settings(sim: SimServer, home: Path, database_url: str | None) -> Settings:
    env = {
        "KILLSYNC_HOME": str(home),
        "KILLSYNC_ESI_BASE_URL": sim.esi_url,
        "KILLSYNC_SSO_BASE_URL": sim.sso_url,
        "KILLSYNC_CLIENT_ID": sim.client_id,
        "KILLSYNC_CONTACT": "demo@killsync.invalid",
    }
    if sim.client_secret:
        env["KILLSYNC_CLIENT_SECRET"] = sim.client_secret
    if database_url:
        env["KILLSYNC_DATABASE_URL"] = database_url
    return load_settings(environ=env)


@contextmanager
def _simulator(characters: int, killmails: int) -> Iterator[SimServer]:
    """The demo's simulator, running; its errors as killsync's (exit code 2)."""
    from killsim import Scenario, SimServer  # noqa: PLC0415 - only the demo imports it
    from killsim.errors import SimError  # noqa: PLC0415

    try:
        scenario = dataclasses.replace(
            Scenario.named(DEMO_SCENARIO), characters=characters, killmails=killmails
        )
        sim = SimServer(scenario, port=0).start()
    except SimError as exc:  # a bad --characters or --killmails, no free port
        raise UsageError(str(exc)) from exc
    try:
        yield sim
    finally:
        sim.stop()


def run_demo(
    *,
    database_url: str | None = None,
    home: Path | None = None,
    characters: int = 5,
    killmails: int = 250,
    concurrency: int = 4,
    on_step: Callable[[str], None] = lambda step: None,
    on_job: Callable[[JobReport, int], None] = lambda report, total: None,
) -> DemoResult:
    """Run the whole pipeline once; returns what it did (the database stays)."""
    started = time.monotonic()
    with _simulator(characters, killmails) as sim:
        home = home or Path(tempfile.mkdtemp(prefix="killsync-demo-"))
        on_step(f"simulator running at {sim.esi_url} (SSO {sim.sso_url})")
        settings = demo_settings(sim, home, database_url)
        db = Database(settings.database_url)
        try:
            db.upgrade()
            runtime = build_runtime(settings, db)
            try:
                for login in sim.provision().characters:
                    added = runtime.accounts.add_refresh_token(login.refresh_token)
                    on_step(f"added {added.name} ({added.character_id})")
                with open_broker(settings, db) as broker:
                    queued = run_queue(db, broker)
                    on_step(f"queued {queued.published} characters")
                    result = run_worker(
                        settings,
                        db,
                        broker,
                        WorkerOptions(concurrency=concurrency, drain=True),
                        stop=threading.Event(),
                        runtime=runtime,
                        on_report=lambda r: on_job(r, queued.published),
                    )
            finally:
                runtime.close()
            stats = collect_stats(db)
        finally:
            db.close()
        snapshot = sim.stats.snapshot()
    return DemoResult(
        settings,
        characters,
        result.handled,
        stats,
        time.monotonic() - started,
        snapshot.count(),
        sum(1 for n in snapshot.body_fetches.values() if n > 1),
    )
