"""Secrets at rest: `secrets rotate|status`, the key file (atomic, checked), private files.

Rotation is tested end to end against the simulated SSO and a Discord/Slack server on
SQLite and PostgreSQL; key-file races with real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from killcli.db import Database
from killcli.db.models import Character, Webhook
from killcli.sso.crypto import TokenCipher, generate_key
from killsim import SimServer
from tests.conftest import CliResult, DbTarget, sim_environ
from tests.events.chat import ChatServer

Cli = Callable[..., CliResult]
ROOT = os.geteuid() == 0


@pytest.fixture
def sim(start_sim: Any) -> SimServer:
    return start_sim("smoke")  # type: ignore[no-any-return]


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


@pytest.fixture
def sim_env(
    sim: SimServer,
    db: Database,
    db_target: DbTarget,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """KILLSYNC_* pointing at the simulator and a migrated database of either kind."""
    environ = sim_environ(sim, isolated_env, db_target.url)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    return environ


def data(result: CliResult) -> Any:
    assert result.exit_code in {0, 3}, result.stderr
    return json.loads(result.stdout)["data"]


def by_kind(status: dict[str, Any]) -> dict[str, tuple[list[int], int]]:
    return {k["kind"]: (k["by_key"], k["undecryptable"]) for k in status["kinds"]}


def stored_values(db: Database) -> list[str]:
    with db.session() as s:
        tokens = s.execute(select(Character.refresh_token_enc, Character.access_token_enc)).all()
        urls = s.execute(select(Webhook.url_enc)).scalars().all()
    return [v for row in tokens for v in row if v is not None] + list(urls)


def test_rotation_covers_every_status_and_webhook_then_the_old_key_can_go(
    cli: Cli,
    db: Database,
    sim: SimServer,
    sim_env: dict[str, str],
    chat: ChatServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = generate_key(), generate_key()
    monkeypatch.setenv("KILLSYNC_SECRET_KEY", old)
    active, disabled, revoked = list(sim.world.ground_truth())[:3]
    for cid in (active, disabled, revoked):
        added = cli("users", "add", "--refresh-token", "-", stdin=sim.issue_refresh_token(cid))
        assert added.exit_code == 0, added.stderr
    for kind, url in (("discord", chat.discord_url()), ("slack", chat.slack_url())):
        assert cli("webhooks", "add", kind, "-", "--allow-insecure", stdin=url).exit_code == 0
    assert cli("users", "disable", str(disabled)).exit_code == 0
    sim.revoke(revoked)
    assert cli("refresh-token", str(revoked)).exit_code == 4  # now needs_login

    monkeypatch.setenv("KILLSYNC_SECRET_KEY", f"{new},{old}")
    before = by_kind(data(cli("secrets", "status", "--json")))
    assert before == {
        "refresh_token": ([0, 3], 0),
        "access_token": ([0, 2], 0),
        "webhook_url": ([0, 2], 0),
    }
    rotated = data(cli("secrets", "rotate", "--json"))
    assert {k["kind"]: k["rotated"] for k in rotated["kinds"]} == {
        "refresh_token": 3,
        "access_token": 2,
        "webhook_url": 2,
    }
    assert rotated["undecryptable"] == 0 and rotated["old_keys_unused"]
    again = cli("secrets", "rotate")
    assert again.exit_code == 0
    assert "all 7 values are under key #1; you can now remove the other keys" in again.stderr

    monkeypatch.setenv("KILLSYNC_SECRET_KEY", new)  # the old key is gone
    after = data(cli("secrets", "status", "--json"))
    assert by_kind(after) == {
        "refresh_token": ([3], 0),
        "access_token": ([2], 0),
        "webhook_url": ([2], 0),
    }
    assert after["old_keys_unused"]
    only_new = TokenCipher([new])
    assert all(only_new.decrypt(value) for value in stored_values(db))
    hooks = data(cli("webhooks", "list", "--json"))
    assert [h["url"].startswith(chat.base) for h in hooks] == [True, True]
    for hook in hooks:
        assert cli("webhooks", "test", str(hook["id"])).exit_code == 0
    assert len(chat.posted) == 2
    assert cli("users", "enable", str(disabled)).exit_code == 0
    refreshed = cli("refresh-token", str(disabled), "--json")
    assert refreshed.exit_code == 0, refreshed.stdout + refreshed.stderr
    assert [r["ok"] for r in data(refreshed)] == [True]


def test_values_no_key_opens_are_counted_and_kept(
    cli: Cli, db: Database, db_target: DbTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILLSYNC_DATABASE_URL", db_target.url)
    lost, old, new = generate_key(), generate_key(), generate_key()
    with db.session() as s:
        s.add_all(
            [
                Webhook(kind="discord", url_enc=TokenCipher([lost]).encrypt("https://x")),
                Webhook(kind="discord", url_enc=TokenCipher([old]).encrypt("https://y")),
            ]
        )
    unreadable = stored_values(db)[0]
    monkeypatch.setenv("KILLSYNC_SECRET_KEY", f"{new},{old}")
    result = cli("secrets", "rotate")
    assert result.exit_code == 3
    assert "1 value cannot be decrypted with any configured key" in result.stderr
    assert "1 of 2 values not under key #1 yet" in result.stderr
    assert unreadable in stored_values(db)  # never destroyed
    status = data(cli("secrets", "status", "--json"))
    assert by_kind(status)["webhook_url"] == ([1, 0], 1) and not status["old_keys_unused"]


# PostgreSQL only: on SQLite, BEGIN IMMEDIATE serialises writers, so they never interleave.
@pytest.mark.postgres
@pytest.mark.parametrize("db_target", ["postgresql"], indirect=True)
def test_a_refresh_during_rotation_is_never_overwritten(db: Database) -> None:
    from killcli.secrets import rotate_secrets

    old, new = generate_key(), generate_key()
    both = TokenCipher([new, old])
    with db.session() as s:
        s.add(
            Character(
                character_id=1,
                name="A",
                owner_hash="h",
                refresh_token_enc=TokenCipher([old]).encrypt("first"),
            )
        )
    results = []
    with db.engine.connect() as worker:  # a refresh holding the row lock, as accounts does
        worker.execute(select(Character.character_id).with_for_update())
        worker.execute(
            update(Character).values(
                refresh_token_enc=TokenCipher([old]).encrypt("rotated-by-the-sso")
            )
        )
        rotation = threading.Thread(target=lambda: results.append(rotate_secrets(db, both)))
        rotation.start()
        _wait_for_a_lock_wait(db)
        worker.commit()
    rotation.join(30)
    assert results[0].kinds[0].changed == 1 and results[0].kinds[0].rotated == 0
    assert both.decrypt(stored_values(db)[0]) == "rotated-by-the-sso"


def _wait_for_a_lock_wait(db: Database) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    deadline = time.monotonic() + 30
    with db.engine.connect() as conn:
        while conn.execute(query).scalar_one() == 0:
            assert time.monotonic() < deadline, "the rotation never waited for the row lock"
            time.sleep(0.05)
            conn.rollback()


# -- the key file ------------------------------------------------------------------------


def test_a_deleted_key_file_with_encrypted_data_is_an_error(
    cli: Cli, db: Database, db_target: DbTarget, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILLSYNC_DATABASE_URL", db_target.url)
    url = "https://discord.com/api/webhooks/1/secret-token"
    assert cli("webhooks", "add", "discord", "-", stdin=url).exit_code == 0
    key_file = isolated_env / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_file.unlink()
    for args in (("webhooks", "list"), ("secrets", "status"), ("secrets", "rotate")):
        result = cli(*args)
        assert result.exit_code == 2, args
        assert f"secret key file {key_file} is missing" in result.stderr
        assert "the database holds 1 encrypted value " in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not key_file.exists()


def _run_killsync(
    env: dict[str, str], *args: str, stdin: Any = subprocess.PIPE, **popen: Any
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "killcli", *args],
        env=env,
        text=True,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def test_ten_concurrent_first_commands_agree_on_one_key(
    cli: Cli,
    db: Database,
    db_target: DbTarget,
    isolated_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**os.environ, "KILLSYNC_HOME": str(isolated_env), "KILLSYNC_DATABASE_URL": db_target.url}
    urls = []
    for n in range(10):
        urls.append(tmp_path / f"url-{n}.txt")
        urls[-1].write_text(f"https://discord.com/api/webhooks/{n}/token-{n}\n", "ascii")
    procs = []
    for url in urls:  # every process has its input ready: they start as one herd
        with url.open(encoding="ascii") as stdin:
            procs.append(_run_killsync(env, "webhooks", "add", "discord", "-", stdin=stdin))
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 10, errors
    assert sorted(p.name for p in isolated_env.iterdir()) == ["secret.key"]
    monkeypatch.setenv("KILLSYNC_DATABASE_URL", db_target.url)
    hooks = data(cli("webhooks", "list", "--json"))
    assert sorted(h["url"] for h in hooks) == sorted(
        f"https://discord.com/api/webhooks/{n}/***" for n in range(10)
    )
    status = data(cli("secrets", "status", "--json"))
    assert by_kind(status)["webhook_url"] == ([10], 0)


BAD_KEY_FILES: dict[str, Callable[[Path], object]] = {
    "non-ASCII": lambda p: p.write_text("clé-secrète\n", encoding="utf-8"),
    "binary": lambda p: p.write_bytes(bytes(range(256))),
    "NUL bytes": lambda p: p.write_bytes(b"\x00" * 44),
    "empty": lambda p: p.write_bytes(b""),
    "blank": lambda p: p.write_bytes(b" \n\n"),
    "not a Fernet key": lambda p: p.write_text("hunter2-my-password\n", encoding="ascii"),
    "second key bad": lambda p: p.write_text(f"{generate_key()},hunter2\n", encoding="ascii"),
    "directory": lambda p: p.mkdir(),
    "FIFO": os.mkfifo,
    "link to /dev/zero": lambda p: p.symlink_to("/dev/zero"),
    "dangling link": lambda p: p.symlink_to(p.with_name("nowhere")),
    "huge": lambda p: p.write_text(generate_key() * 2000, encoding="ascii"),
}


@pytest.mark.parametrize("make", BAD_KEY_FILES.values(), ids=BAD_KEY_FILES.keys())
def test_a_bad_key_file_is_one_clear_line(
    make: Callable[[Path], object], cli: Cli, isolated_env: Path
) -> None:
    assert cli("db", "upgrade").exit_code == 0
    key_file = isolated_env / "secret.key"
    make(key_file)
    result = cli("webhooks", "list")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"killsync: error: secret key file {key_file}")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_an_unreadable_key_file_is_one_clear_line(cli: Cli, isolated_env: Path) -> None:
    assert cli("db", "upgrade").exit_code == 0
    key_file = isolated_env / "secret.key"
    key_file.write_text(generate_key() + "\n", encoding="ascii")
    key_file.chmod(0)
    command = [sys.executable, "-m", "killcli", "secrets", "status"]
    if ROOT:  # root reads any file: take away the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no way to be refused a read")
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KILLSYNC_HOME": str(isolated_env)},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"killsync: error: secret key file {key_file}: cannot read: Permission denied "
        "(restore it from your backup, or set KILLSYNC_SECRET_KEY)"
    )


# -- file modes ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_key_and_token_files_are_private_whatever_the_umask(
    umask: int, tmp_path: Path, isolated_env: Path
) -> None:
    env = {**os.environ, "KILLSYNC_HOME": str(isolated_env)}
    upgrade = _run_killsync(env, "db", "upgrade", umask=umask)
    upgrade.communicate(timeout=60)
    assert upgrade.returncode == 0
    add = _run_killsync(env, "webhooks", "add", "discord", "-", umask=umask)
    add.communicate("https://discord.com/api/webhooks/1/tok\n", timeout=60)
    assert add.returncode == 0
    assert stat.S_IMODE((isolated_env / "secret.key").stat().st_mode) == 0o600

    tokens = tmp_path / "tokens.json"
    tokens.write_text("{}", encoding="utf-8")
    tokens.chmod(0o644)  # an old, readable file is replaced, not reused
    planted = tmp_path / "victim.txt"
    planted.write_text("keep me", encoding="utf-8")
    linked = tmp_path / "linked.json"
    linked.symlink_to(planted)
    for path in (tokens, linked):
        assert _serve_until_written(env, path, umask)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert "refresh_token" in path.read_text(encoding="utf-8")
    assert planted.read_text(encoding="utf-8") == "keep me"  # the link was not followed
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _serve_until_written(env: dict[str, str], path: Path, umask: int) -> bool:
    """Run `sim serve --tokens-file PATH` until it has written the file, then stop it."""
    before = path.lstat().st_ino if path.exists() or path.is_symlink() else None
    proc = _run_killsync(env, "sim", "serve", "--tokens-file", str(path), umask=umask)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if path.lstat().st_ino != before and not path.is_symlink():
                return True
            time.sleep(0.1)
        return False
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_threads_creating_one_key_file_agree(tmp_path: Path) -> None:
    from killcli.keyfile import load_key_file

    key_file = tmp_path / "new" / "secret.key"
    barrier = threading.Barrier(16)
    seen: list[list[str]] = []

    def first_command() -> None:
        barrier.wait()
        seen.append(load_key_file(key_file))

    threads = [threading.Thread(target=first_command) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 16 and all(keys == seen[0] for keys in seen)
    assert [p.name for p in key_file.parent.iterdir()] == ["secret.key"]
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700


def test_a_key_file_with_several_keys_rotates_too(
    cli: Cli, db: Database, db_target: DbTarget, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILLSYNC_DATABASE_URL", db_target.url)
    assert (
        cli(
            "webhooks", "add", "discord", "-", stdin="https://discord.com/api/webhooks/1/tok"
        ).exit_code
        == 0
    )
    key_file = isolated_env / "secret.key"
    old = key_file.read_text(encoding="ascii").strip()
    new = generate_key()
    key_file.write_text(f"{new},\n{old}\n", encoding="ascii")
    rotated = data(cli("secrets", "rotate", "--json"))
    assert rotated["rotated"] == 1 and rotated["keys"] == 2 and rotated["old_keys_unused"]
    key_file.write_text(new + "\n", encoding="ascii")
    assert data(cli("webhooks", "list", "--json"))[0]["url"].endswith("/1/***")
