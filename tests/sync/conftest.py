"""Fixtures of the sync tests: a runtime wired to a simulator, characters added."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from killcli.config import load_settings
from killcli.db import Database
from killcli.runtime import Runtime, build_runtime
from killsim import SimServer
from tests.conftest import DbTarget, sim_environ


@pytest.fixture
def wire(
    db: Database, db_target: DbTarget, tmp_path: Path
) -> Iterator[Callable[[SimServer], Runtime]]:
    runtimes: list[Runtime] = []

    def make(sim: SimServer, **environ: str) -> Runtime:
        """``environ``: settings over the simulator's (``KILLSYNC_EGRESS="b"``, say)."""
        env = {**sim_environ(sim, tmp_path / "home", db_target.url), **environ}
        settings = load_settings(environ=env)
        runtime = build_runtime(settings, db)
        for cid in sim.world.ground_truth():
            runtime.accounts.add_refresh_token(sim.issue_refresh_token(cid))
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.close()
