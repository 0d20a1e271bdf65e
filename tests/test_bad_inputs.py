"""Every bad input tried against killsync, and how it must end.

``BAD_INPUTS`` is the project's record of bad inputs (issue 10, finding 8 and later): each
row is run through the real entry point and must end with its documented exit code, one
error line naming the problem, and no traceback. Add a row for every bad input you try;
the table only grows. Inputs that need a process of their own (stdout on ``/dev/full``, a
closed pipe), the simulator or a database server have their own tests below.

Placeholders in ``argv``: ``{tmp}`` the test's temporary directory, ``{home}`` the data
directory (``KILLSYNC_HOME``), ``{port}`` a TCP port something already listens on.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from killcli.esi.pagination import MAX_LIST_PAGES
from tests.conftest import REPO, CliResult, DbTarget, sim_environ

Cli = Callable[..., CliResult]
TOO_BIG_ID = str(2**63)  # one more than BIGINT holds: was an OverflowError (exit 1)
FUTURE_REVISION = "9999_from_the_future"
HOOK_URL = "https://discord.com/api/webhooks/123456/sEcReT\n"

NO_DATABASE = "no database at"
NOT_SQLITE = "is not a SQLite database"
OUT_OF_RANGE = "is out of range"
BAD_SECONDS = "seconds: must be finite"


@dataclass(frozen=True)
class Bad:
    """One bad input: what is run, in which state, and how it must end."""

    argv: tuple[str, ...]
    code: int
    message: str
    setup: str = "none"  # a key of SETUPS
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | None = None

    @property
    def id(self) -> str:
        return f"{self.setup}:{' '.join(self.argv)}"[:90]


def _row(argv: str, code: int, message: str, setup: str = "none", **kw: Any) -> Bad:
    return Bad(tuple(argv.split()), code, message, setup, **kw)


BAD_INPUTS: list[Bad] = [
    # -- a database that is missing: read-only commands never create one (exit 6) -----------
    *(
        _row(argv, 6, NO_DATABASE)
        for argv in (
            "users list",
            "users list --json",
            "stats",
            "stats --json",
            "export",
            "db status",
            "users disable 5",
            "users enable 5",
            "users remove 5",
            "sync-user 5",
            "queue",
            "queue --dry-run",
            "worker --drain",
            "refresh-token --all",
            "webhooks list",
            "--database-url sqlite:///{tmp}/typo/dir/killsync.db users list",
            "--database-url sqlite:///{tmp}/typo.db stats",
        )
    ),
    # -- a database that is not one (exit 6) ---------------------------------------------------
    _row("users list", 6, NOT_SQLITE, "junk_db"),
    _row("stats", 6, NOT_SQLITE, "text_db"),
    _row("db upgrade", 6, NOT_SQLITE, "text_db"),
    _row("users add --refresh-token -", 6, NOT_SQLITE, "junk_db", stdin="tok"),
    _row("--database-url sqlite:///{tmp} users list", 6, "is a directory"),
    _row("--database-url sqlite:///{tmp} db upgrade", 6, "is a directory"),
    _row("users list", 6, "database disk image is malformed", "malformed_db"),
    _row("db upgrade", 6, "database disk image is malformed", "malformed_db"),
    _row("users list", 6, "run `killsync db upgrade`", "empty_db"),
    _row("export", 6, "run `killsync db upgrade`", "empty_db"),
    # -- a schema newer than this killsync (exit 6; `db upgrade` refuses) ----------------------
    _row("users list", 6, "newer than this killsync", "newer_schema"),
    _row("db upgrade", 6, "newer than this killsync", "newer_schema"),
    _row("login --no-browser --timeout 1", 6, "newer than this killsync", "newer_schema"),
    # -- ids that do not fit BIGINT, or are no ids (exit 2) ------------------------------------
    *(
        _row(argv, 2, OUT_OF_RANGE)
        for argv in (
            f"sync-user {TOO_BIG_ID}",
            "sync-user 0",
            f"users disable {TOO_BIG_ID}",
            f"users enable {TOO_BIG_ID}",
            f"users remove {TOO_BIG_ID}",
            f"refresh-token {TOO_BIG_ID}",
            f"export --character {TOO_BIG_ID}",
            f"queue --character {TOO_BIG_ID}",
            "sync-user 99999999999999999999999999",
        )
    ),
    *(
        _row(argv, 2, OUT_OF_RANGE)
        for argv in (
            f"webhooks add discord - --character {TOO_BIG_ID}",
            f"webhooks remove {TOO_BIG_ID}",
            f"webhooks test {TOO_BIG_ID}",
            f"watch --character {TOO_BIG_ID} --timeout 1",
            "webhooks add discord - --max-age 99999999999999999999",
            "queue --priority 11",
            "queue --priority -1",
            "queue --character 0",
            "queue --corporation 0",
            f"queue --corporation {TOO_BIG_ID}",
        )
    ),
    _row("queue --corporation 98000001", 2, "corporation 98000001 is not tracked", "upgraded"),
    _row(
        "queue --all --corporation 98000001",
        2,
        "--all and --character or --corporation exclude each other",
        "upgraded",
    ),
    _row("sync-user 12abc", 2, "is not a whole number"),
    _row("users disable -1", 2, "No such option"),
    # -- ports (exit 2) ------------------------------------------------------------------------
    _row("worker --metrics-port 70000", 2, OUT_OF_RANGE),
    _row("worker --metrics-port 0", 2, OUT_OF_RANGE),
    _row(
        "worker --metrics-port {port} --drain",
        2,
        "cannot listen on 127.0.0.1",
        "busy_port",
        env={"KILLSYNC_CLIENT_ID": "killsync-tests", "KILLSYNC_CONTACT": "t@example.org"},
    ),
    _row("sim serve --port 70000", 2, OUT_OF_RANGE),
    _row("sim serve --port -5", 2, OUT_OF_RANGE),
    _row("sim serve --port {port}", 2, "cannot listen on 127.0.0.1", "busy_port"),
    # -- the simulator's own errors, as killsync's (exit 2) ------------------------------------
    _row("sim serve --scenario nope", 2, "unknown scenario 'nope'"),
    _row("sim serve --scenario {tmp}/absent.toml", 2, "absent.toml: not found"),
    _row("demo --characters 0", 2, "characters: must be at least 1"),
    # -- worker sizes (exit 2) -----------------------------------------------------------------
    _row("worker --concurrency 100000", 2, OUT_OF_RANGE),
    _row("worker --concurrency 0", 2, OUT_OF_RANGE),
    _row("worker --max-jobs -1", 2, OUT_OF_RANGE),
    _row("worker --max-jobs 0", 2, OUT_OF_RANGE),
    # -- durations (exit 2): Python's float() takes nan, inf and 1e309 ------------------------
    *(
        _row(f"stats --watch={value}", 2, BAD_SECONDS)
        for value in ("0", "-1", "0.1", "nan", "inf", "1e309", "100000")
    ),
    _row("stats --watch soon", 2, "is not a number of seconds"),
    *(
        _row(f"login --timeout={value}", 2, BAD_SECONDS)
        for value in ("nan", "1e309", "-1", "0", "inf", "-inf")
    ),
    # -- token files (exit 2) ------------------------------------------------------------------
    _row("users import {tmp}/token.bin", 2, "not text", "binary_file"),
    _row("users add --refresh-token {tmp}/token.bin", 2, "not text", "binary_file"),
    _row("users import {tmp}/nul.txt", 2, "not text", "nul_file"),
    _row("users add --refresh-token -", 2, "not text", stdin="abc\x00\x01def"),
    _row("users import {tmp}", 2, "cannot read: Is a directory"),
    _row("users import {tmp}/missing.txt", 2, "cannot read: No such file or directory"),
    # -- config files (exit 2) -----------------------------------------------------------------
    _row("--config {tmp}/missing.toml config show", 2, "missing.toml does not exist"),
    _row(
        "config show",
        2,
        "nowhere.toml does not exist",
        env={"KILLSYNC_CONFIG": "/nonexistent/nowhere.toml"},
    ),
    _row("--config {tmp} config show", 2, "cannot read: Is a directory"),
    _row("--config /dev/zero config show", 2, "larger than"),
    _row("--config {tmp}/token.bin config show", 2, "cannot read", "binary_file"),
    # -- looking at killmails: kills, show (exit 2; 6 without a database) ------------------
    _row("kills", 6, NO_DATABASE),
    _row("show 5", 6, NO_DATABASE),
    _row("kills --character 5 --corporation 6", 2, "not both"),
    _row("kills --since yesterday", 2, "not a duration: 'yesterday'"),
    _row("kills --since 2026-13-45", 2, "is not a date"),
    _row("kills --since 99999999d", 2, "at most ten years"),
    _row("kills --limit 0", 2, OUT_OF_RANGE),
    _row("kills --limit 10001", 2, OUT_OF_RANGE),
    _row(f"kills --character {TOO_BIG_ID}", 2, OUT_OF_RANGE),
    _row(f"kills --corporation {TOO_BIG_ID}", 2, OUT_OF_RANGE),
    _row("show 0", 2, OUT_OF_RANGE),
    _row(f"show {TOO_BIG_ID}", 2, OUT_OF_RANGE),
    _row("show abc", 2, "is not a whole number"),
    _row("show 5 --attackers 0", 2, OUT_OF_RANGE),
    _row("show 5", 2, "no killmail 5 in the database", "upgraded"),
    _row("show 5 --json", 2, "no killmail 5 in the database", "upgraded"),
    # -- webhook filters and delay (exit 2) ------------------------------------------------
    _row("webhooks add discord - --kills-only --losses-only", 2, "not both", stdin=HOOK_URL),
    _row("webhooks add discord - --character 5 --corporation 6", 2, "not both", stdin=HOOK_URL),
    _row("webhooks add discord - --delay soon", 2, "not a duration", stdin=HOOK_URL),
    _row(
        "webhooks add discord - --delay 5d",
        2,
        "--delay must be between",
        "upgraded",
        stdin=HOOK_URL,
    ),
    _row(
        "webhooks add discord - --kills-only",
        2,
        "need --character or --corporation",
        "upgraded",
        stdin=HOOK_URL,
    ),
    _row("webhooks add discord - --system 0", 2, OUT_OF_RANGE, stdin=HOOK_URL),
    _row(f"webhooks add discord - --system {TOO_BIG_ID}", 2, OUT_OF_RANGE, stdin=HOOK_URL),
    _row("webhooks edit 99 --delay 1h", 2, "no webhook with id 99", "upgraded"),
    _row("webhooks edit 0 --delay 1h", 2, OUT_OF_RANGE),
    _row("webhooks edit 1 --anyone --character 5", 2, "not both", "upgraded"),
    _row("webhooks edit 1 --kills-only --losses-only", 2, "not both", "upgraded"),
    _row("webhooks add discord - --min-value lots", 2, "not an ISK amount", stdin=HOOK_URL),
    _row("webhooks add discord - --region 5", 2, OUT_OF_RANGE, stdin=HOOK_URL),
    _row("webhooks add discord - --ship-group 0", 2, OUT_OF_RANGE, stdin=HOOK_URL),
    _row("webhooks edit 1 --region 10000002 --all-regions", 2, "contradict", "upgraded"),
    _row("webhooks add discord - --min-value 0", 2, OUT_OF_RANGE, stdin=HOOK_URL),
    _row("webhooks add discord - --min-value 2000t", 2, OUT_OF_RANGE, stdin=HOOK_URL),
    _row("webhooks edit 1 --min-value 1b --any-value", 2, "contradict", "upgraded"),
    # -- prices and values (issue 14) ----------------------------------------------------------
    _row("prices import {tmp}/absent", 2, "absent: no such file or directory"),
    _row("prices import --region 5 {tmp}", 2, OUT_OF_RANGE),
    _row("prices import --region 10000002x {tmp}", 2, "is not a whole number"),
    _row("prices sync --days 0", 2, OUT_OF_RANGE),
    _row("prices sync --days 100000", 2, OUT_OF_RANGE),
    _row("prices sync --per-minute 301", 2, OUT_OF_RANGE),
    _row("prices sync --per-minute many", 2, "is not a whole number"),
    _row("values --since yesterday", 2, "--since: not a date"),
    _row("export --values --since 2026-13-01", 2, "--since: not a date"),
    _row("values", 6, NO_DATABASE),
    _row("prices sync", 6, NO_DATABASE),
    _row("values", 2, "not a region id", env={"KILLSYNC_PRICE_REGION": "jita"}),
    _row("prices sync", 2, "not a region id", env={"KILLSYNC_PRICE_REGION": "99"}),
]


# -- setups: the state a row runs in --------------------------------------------------------


def _upgraded(cli: Cli, env: dict[str, str]) -> Path:
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.stderr
    return Path(env["home"]) / "killsync.db"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextmanager
def _setup(name: str, cli: Cli, subs: dict[str, str]) -> Iterator[None]:
    """Put the data directory (or ``{tmp}``) in the state ``name`` says."""
    home, tmp = Path(subs["home"]), Path(subs["tmp"])
    if name == "junk_db":
        _write(home / "killsync.db", bytes(range(256)) * 20)
    elif name == "text_db":
        _write(home / "killsync.db", b"hello, I am a text file\n")
    elif name == "empty_db":
        _write(home / "killsync.db", b"")
    elif name == "malformed_db":
        with (_upgraded(cli, subs)).open("r+b") as fh:
            fh.seek(4096)
            fh.write(b"\xff" * 40_000)
    elif name == "upgraded":
        _upgraded(cli, subs)
    elif name == "newer_schema":
        _stamp(f"sqlite:///{_upgraded(cli, subs)}", FUTURE_REVISION)
    elif name == "binary_file":
        _write(tmp / "token.bin", bytes(range(128, 256)))
    elif name == "nul_file":
        _write(tmp / "nul.txt", b"token-one\n\x00\x00\x00\n")
    elif name == "upgraded":
        _upgraded(cli, subs)
    if name != "busy_port":
        yield
        return
    _upgraded(cli, subs)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        subs["port"] = str(busy.getsockname()[1])
        yield


def _stamp(url: str, revision: str) -> str:
    """Set the schema revision; returns the one it replaced."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            before = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()
    return str(before)


def _error_lines(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.startswith(("killsync: error:", "Error:", "killsync: unexpected"))
    ]


def assert_one_clear_line(result: CliResult, code: int, message: str) -> None:
    """The documented exit code, one error line with the message, no traceback."""
    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert message in lines[0], result.stderr
    assert "unexpected error" not in lines[0]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda bad: bad.id)
def test_bad_input_is_one_clear_line(
    bad: Bad, cli: Cli, tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subs = {"tmp": str(tmp_path), "home": str(isolated_env)}
    for key, value in bad.env.items():
        monkeypatch.setenv(key, value)
    with _setup(bad.setup, cli, subs):
        result = cli(*(arg.format(**subs) for arg in bad.argv), stdin=bad.stdin)
    assert_one_clear_line(result, bad.code, bad.message)
    if bad.setup == "none" and bad.code == 6:  # a read-only command left nothing behind
        assert not isolated_env.exists()
        assert not (tmp_path / "typo").exists() and not (tmp_path / "typo.db").exists()


# -- --debug keeps the exit code and adds the traceback -------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (("users", "list"), 6),
        (("--config", "/nonexistent.toml", "config", "show"), 2),
        (("sync-user", "5"), 6),
    ],
)
def test_debug_keeps_the_exit_code_and_shows_the_traceback(
    cli: Cli, argv: tuple[str, ...], code: int
) -> None:
    result = cli("--debug", *argv)
    assert result.exit_code == code
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("killsync: error:")


def test_killsync_debug_variable_keeps_the_exit_code(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILLSYNC_DEBUG", "1")
    result = cli("users", "list")
    assert result.exit_code == 6 and "Traceback" in result.stderr


# -- writing commands may create the database, privately -----------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o277])
def test_database_and_data_directory_are_private_whatever_the_umask(
    cli: Cli, isolated_env: Path, umask: int
) -> None:
    old = os.umask(umask)
    try:
        result = cli("db", "upgrade")
        db_file = isolated_env / "killsync.db"
        # SQLite creates -wal and -shm with the database file's mode: hold them open.
        conn = sqlite3.connect(db_file)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("CREATE TABLE probe (x)")
            modes = {p.name: _mode(p) for p in isolated_env.iterdir()}
        finally:
            conn.close()
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    assert _mode(isolated_env) == 0o700
    assert modes == {"killsync.db": 0o600, "killsync.db-wal": 0o600, "killsync.db-shm": 0o600}


def test_a_custom_path_gets_private_new_directories_and_keeps_existing_modes(
    cli: Cli, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    url = f"sqlite:///{shared / 'new' / 'deeper' / 'k.db'}"
    old = os.umask(0o022)
    try:
        assert cli("--database-url", url, "db", "upgrade").exit_code == 0
    finally:
        os.umask(old)
    assert _mode(shared) == 0o755  # existed: the operator's choice
    assert _mode(shared / "new") == 0o700 and _mode(shared / "new" / "deeper") == 0o700
    assert _mode(shared / "new" / "deeper" / "k.db") == 0o600


def test_an_existing_database_keeps_its_mode(cli: Cli, isolated_env: Path) -> None:
    assert cli("db", "upgrade").exit_code == 0
    db_file = isolated_env / "killsync.db"
    db_file.chmod(0o640)  # e.g. readable by a backup group
    assert cli("users", "list").exit_code == 0
    assert cli("db", "upgrade").exit_code == 0
    assert _mode(db_file) == 0o640


def test_import_creates_the_database_read_only_commands_then_work(
    cli: Cli, tmp_path: Path, isolated_env: Path
) -> None:
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    assert cli("import", str(empty)).exit_code == 0
    assert (isolated_env / "killsync.db").exists()
    assert cli("users", "list", "--json").exit_code == 0
    assert cli("db", "status").exit_code == 0


# -- a schema newer than the code, on both databases ----------------------------------------


def test_newer_schema_is_refused_cleanly_on_both_databases(cli: Cli, db_target: DbTarget) -> None:
    url = ["--database-url", db_target.url]
    assert cli(*url, "db", "upgrade").exit_code == 0
    before = _stamp(db_target.url, FUTURE_REVISION)
    try:
        for argv in (("users", "list"), ("db", "upgrade"), ("stats", "--json")):
            assert_one_clear_line(cli(*url, *argv), 6, "newer than this killsync")
        status = cli(*url, "db", "status", "--json")
        assert json.loads(status.stdout)["data"]["newer_than_killsync"] is True
    finally:
        _stamp(db_target.url, before)  # the PostgreSQL database is shared by the session
    assert cli(*url, "users", "list").exit_code == 0


# -- stdout that cannot take the data: a process of its own --------------------------------


def _killsync(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "killcli", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, **kw
    )


@pytest.fixture
def proc_env(cli: Cli, isolated_env: Path) -> dict[str, str]:
    assert cli("db", "upgrade").exit_code == 0
    return {**os.environ, "KILLSYNC_HOME": str(isolated_env)}


@pytest.mark.parametrize(
    "args",
    [
        ["users", "list", "--json"],
        ["users", "list"],
        ["config", "show", "--json"],
        ["config", "path"],
    ],
)
def test_stdout_on_a_full_disk_is_one_line_and_exit_2(
    proc_env: dict[str, str], args: list[str]
) -> None:
    with Path("/dev/full").open("wb") as full:
        proc = _killsync(args, proc_env, stdout=full)
        _, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == 2, stderr
    assert stderr.strip().splitlines() == [
        "killsync: error: cannot write the output: No space left on device"
    ]


@pytest.mark.parametrize(
    "args", [["users", "list", "--json"], ["users", "list"], ["config", "show"]]
)
def test_stdout_closed_by_the_reader_is_one_line_and_exit_2(
    proc_env: dict[str, str], args: list[str]
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `killsync ... | head -0`: the reader is gone before we write
    try:
        proc = _killsync(args, proc_env, stdout=write_end)
    finally:
        os.close(write_end)
    _, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == 2, stderr
    assert stderr.strip().splitlines() == ["killsync: error: cannot write the output: Broken pipe"]


# -- against the simulator over real HTTP ----------------------------------------------------


@pytest.fixture
def sim_cli(
    start_sim: Callable[..., Any], cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, int]:
    """A simulator, killsync pointed at it, one tracked character; (sim, character id)."""
    sim = start_sim("smoke")
    home = tmp_path / "home"
    for key, value in sim_environ(sim, home, f"sqlite:///{home / 'killsync.db'}").items():
        monkeypatch.setenv(key, value)
    character_id = next(iter(sim.world.ground_truth()))
    added = cli("users", "add", "--refresh-token", "-", stdin=sim.issue_refresh_token(character_id))
    assert added.exit_code == 0, added.stderr
    return sim, character_id


@pytest.mark.parametrize(
    "pages", ["99999999999999999999", str(MAX_LIST_PAGES + 1), "0", "-3", "9" * 4000]
)
def test_a_bogus_x_pages_is_a_clear_esi_error(
    sim_cli: tuple[Any, int], cli: Cli, pages: str
) -> None:
    sim, character_id = sim_cli
    sim.faults.bogus_pages(character_id, pages)
    result = cli("sync-user", str(character_id), "--full", "--no-progress")
    assert_one_clear_line(result, 5, "ESI sent X-Pages")
    assert len(result.stderr) < 400  # a 4000-digit header is not echoed whole
    assert cli("sync-user", str(character_id), "--full", "--no-progress").exit_code == 0


def test_worker_drain_exits_3_when_jobs_were_retried(sim_cli: tuple[Any, int], cli: Cli) -> None:
    sim, character_id = sim_cli
    assert cli("queue", "--character", str(character_id)).exit_code == 0
    sim.faults.fail_list(character_id, status=404, times=1)  # not retried by the client
    result = cli("worker", "--drain")
    assert_one_clear_line(result, 3, "1 retried of 1 jobs")
    assert "worker stopped: 1 jobs (0 done, 1 retried, 0 dead)" in result.stderr


def test_worker_drain_exits_0_when_every_job_is_done(sim_cli: tuple[Any, int], cli: Cli) -> None:
    _, character_id = sim_cli
    assert cli("queue", "--character", str(character_id)).exit_code == 0
    result = cli("worker", "--drain")
    assert result.exit_code == 0, result.stderr


# -- the record in docs/bad-inputs.md only grows ----------------------------------------------


def test_docs_table_lists_at_least_every_bad_input_row() -> None:
    """docs/bad-inputs.md: numbered rows 1..N, N in the count at the top, N >= BAD_INPUTS."""
    doc = (REPO / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    numbers = [
        int(line.split("|")[1])
        for line in doc.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    ]
    assert numbers == list(range(1, len(numbers) + 1))
    assert f"**{len(numbers)} bad inputs tried, {len(numbers)} handled cleanly.**" in doc
    assert len(numbers) >= len(BAD_INPUTS)
