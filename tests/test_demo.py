"""`killsync demo` on a fresh install: no configuration, the real pipeline, under a minute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_demo_runs_the_pipeline_from_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILLSYNC_")}
    env["HOME"] = str(tmp_path)  # no config file, no data directory yet
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    result = subprocess.run(
        [sys.executable, "-m", "killcli", "demo", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert data["characters"] == 5
    assert data["jobs"] == 5
    assert data["killmails"] == 250
    assert data["bodies_fetched_twice"] == 0
    assert data["elapsed_s"] < 60
    assert data["database_url"].startswith("sqlite:///")
    exported = subprocess.run(
        [sys.executable, "-m", "killcli", "export"],
        cwd=REPO,
        env={**env, "KILLSYNC_DATABASE_URL": data["database_url"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(exported.stdout.splitlines()) == 250
    assert not (tmp_path / "data" / "killsync").exists()  # the demo kept out of the real home


def test_the_root_database_url_says_where_the_demo_writes(tmp_path: Path) -> None:
    """`killsync --database-url URL demo` keeps the demo's killmails at URL (the demo's own
    `--database-url` said so before; KILLSYNC_DATABASE_URL is never the demo's target)."""
    target = tmp_path / "demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILLSYNC_")}
    env["HOME"] = str(tmp_path)
    env["KILLSYNC_DATABASE_URL"] = f"sqlite:///{tmp_path / 'operators.db'}"
    args = ["--characters", "2", "--killmails", "20", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "killcli", "--database-url", f"sqlite:///{target}", "demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert data["database_url"] == f"sqlite:///{target}"
    assert data["killmails"] == 20
    assert target.exists()
    assert not (tmp_path / "operators.db").exists()
