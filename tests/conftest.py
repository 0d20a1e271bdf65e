"""Shared fixtures: isolated settings, SQLite and PostgreSQL databases, the CLI runner.

Database tests run on SQLite **and** PostgreSQL. Locally a missing PostgreSQL or
RabbitMQ skips the tests that need it; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from killcli.db import Database
from killcli.db.models import Base

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "KILLSYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str) -> None:
    """Skip locally, fail in CI: a service the suite needs is not there."""
    if IN_CI:
        pytest.fail(f"{what} is not reachable (CI must start it)", pytrace=False)
    pytest.skip(f"{what} is not reachable")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No KILLSYNC_* from the developer's shell; a fresh data directory per test."""
    for key in list(os.environ):
        if key.startswith("KILLSYNC_") and key != "KILLSYNC_TEST_PG_URL":
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("KILLSYNC_HOME", str(home))
    return home


# -- PostgreSQL: one throw-away database per test session ----------------------------


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    admin = make_url(PG_ADMIN_URL)
    name = f"killsync_test_{os.getpid()}_{secrets.token_hex(3)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not reachable"
        engine.dispose()
        unavailable(f"PostgreSQL at {admin.render_as_string(hide_password=True)} ({exc})")
    url = admin.set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    db.upgrade()
    db.close()
    yield url
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def empty_pg_url(pg_url: str) -> Iterator[str]:
    """The session's PostgreSQL database seen through a new, empty schema (its search path):
    where tests that migrate from nothing, or from an old revision, start."""
    schema = f"empty_{secrets.token_hex(4)}"
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def _truncate(db: Database) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@dataclass(frozen=True)
class DbTarget:
    """A database a test runs against: its URL and kind."""

    url: str
    kind: str


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> DbTarget:
    if request.param == "sqlite":
        return DbTarget(f"sqlite:///{tmp_path / 'killsync.db'}", "sqlite")
    url = request.getfixturevalue("pg_url")
    db = Database(url)
    _truncate(db)
    db.close()
    return DbTarget(url, "postgresql")


@pytest.fixture
def db(db_target: DbTarget) -> Iterator[Database]:
    database = Database(db_target.url)
    database.upgrade()
    yield database
    database.close()


# -- the CLI as a user runs it ---------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `killsync ARGS` in-process through the real entry point."""
    from killcli.cli.app import main

    def run(*args: str, stdin: str | None = None) -> CliResult:
        capsys.readouterr()
        old_stdin = sys.stdin
        if stdin is not None:
            import io

            sys.stdin = io.StringIO(stdin)
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdin = old_stdin
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


# -- the ESI simulator and a runtime wired to it ---------------------------------------


@pytest.fixture
def start_sim() -> Iterator[Callable[..., object]]:
    """Start simulators (``start_sim("smoke", page_size=7)``); all stopped after the test."""
    import dataclasses

    from killsim import Scenario, SimServer

    servers: list[SimServer] = []

    def start(name: str = "smoke", *, seed: int = 1, **overrides: Any) -> SimServer:
        scenario = dataclasses.replace(Scenario.named(name, seed=seed), **overrides)
        server = SimServer(scenario, port=0).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def sim_environ(sim: object, home: Path, database_url: str) -> dict[str, str]:
    """The KILLSYNC_* variables that point killsync at a simulator."""
    env = {
        "KILLSYNC_HOME": str(home),
        "KILLSYNC_DATABASE_URL": database_url,
        "KILLSYNC_ESI_BASE_URL": sim.esi_url,  # type: ignore[attr-defined]
        "KILLSYNC_SSO_BASE_URL": sim.sso_url,  # type: ignore[attr-defined]
        "KILLSYNC_CLIENT_ID": sim.client_id,  # type: ignore[attr-defined]
        "KILLSYNC_CONTACT": "tests@killsync.invalid",
    }
    if sim.client_secret:  # type: ignore[attr-defined]
        env["KILLSYNC_CLIENT_SECRET"] = sim.client_secret  # type: ignore[attr-defined]
    return env


# The unattended pipeline's fixtures (``broker_url``, ``pipeline``), for every test module.
from tests.pipeline import broker_url, pipeline  # noqa: E402, F401
