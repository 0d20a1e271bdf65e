"""`killsync export --output PATH` never damages what is at PATH.

A regular file is replaced atomically through a private temporary file; FIFOs and
devices are written in place; symbolic links to files are refused; a planted
``OUT.partial`` link is never followed. Tests run as root (``mknod`` works).
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from killcli.db import Database
from killcli.db.store import save_killmails
from killcli.exporter import open_output
from killcli.killmail import parse_killmail
from tests.conftest import CliResult, DbTarget
from tests.factories import killmail

Cli = Callable[..., CliResult]
IDS = (11, 12, 13)


@pytest.fixture
def url(db_target: DbTarget) -> list[str]:
    """A database holding three killmails, as ``--database-url`` arguments."""
    database = Database(db_target.url)
    database.upgrade()
    with database.session() as session:
        save_killmails(session, [parse_killmail(killmail(i)) for i in IDS])
    database.close()
    return ["--database-url", db_target.url]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> list[str]:
    """Like ``url`` on SQLite only: for behaviour that does not depend on the database."""
    target = DbTarget(f"sqlite:///{tmp_path / 'export.db'}", "sqlite")
    database = Database(target.url)
    database.upgrade()
    with database.session() as session:
        save_killmails(session, [parse_killmail(killmail(i)) for i in IDS])
    database.close()
    return ["--database-url", target.url]


def exported_ids(text: str) -> list[int]:
    return [json.loads(line)["killmail_id"] for line in text.splitlines()]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def test_regular_file_is_replaced_atomically_keeping_its_mode(
    cli: Cli, url: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    out.chmod(0o640)
    before = out.stat().st_ino
    result = cli(*url, "export", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert exported_ids(out.read_text()) == list(IDS)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert out.stat().st_ino != before  # a new file renamed over the old one
    assert leftovers(tmp_path) == []


def test_new_file_gets_the_umask_mode(cli: Cli, sqlite_url: list[str], tmp_path: Path) -> None:
    out = tmp_path / "new.jsonl"
    old_umask = os.umask(0o027)
    try:
        assert cli(*sqlite_url, "export", "-o", str(out)).exit_code == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert exported_ids(out.read_text()) == list(IDS)


def test_symlink_to_a_file_is_refused_and_left_alone(
    cli: Cli, sqlite_url: list[str], tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(victim)
    result = cli(*sqlite_url, "export", "--output", str(link))
    assert result.exit_code == 2
    assert "is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert link.is_symlink() and victim.read_text() == "precious\n"
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere")
    assert cli(*sqlite_url, "export", "-o", str(dangling)).exit_code == 2
    assert not (tmp_path / "nowhere").exists()


def test_planted_partial_link_is_never_followed(
    cli: Cli, sqlite_url: list[str], tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out.jsonl"
    planted = tmp_path / "out.jsonl.partial"
    planted.symlink_to(victim)
    result = cli(*sqlite_url, "export", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert victim.read_text() == "precious\n"
    assert planted.is_symlink()
    assert exported_ids(out.read_text()) == list(IDS)
    assert leftovers(tmp_path) == ["out.jsonl.partial"]  # only the planted one


def test_fifo_is_written_in_place(cli: Cli, sqlite_url: list[str], tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = cli(*sqlite_url, "export", "--output", str(fifo))
    reader.join(timeout=10)
    assert result.exit_code == 0, result.stderr
    assert exported_ids(received[0].decode()) == list(IDS)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert leftovers(tmp_path) == []


def test_device_nodes_are_written_in_place(cli: Cli, sqlite_url: list[str], tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    result = cli(*sqlite_url, "export", "--output", str(null))
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(null.lstat().st_mode)
    link = tmp_path / "null-link"  # a link to a device is written through: nothing replaced
    link.symlink_to(null)
    assert cli(*sqlite_url, "export", "--output", str(link)).exit_code == 0
    assert link.is_symlink() and stat.S_ISCHR(null.lstat().st_mode)


def test_full_device_is_one_clear_line_and_stays_a_device(
    cli: Cli, sqlite_url: list[str], tmp_path: Path
) -> None:
    full = tmp_path / "full"
    os.mknod(full, stat.S_IFCHR | 0o600, os.makedev(1, 7))
    result = cli(*sqlite_url, "export", "--output", str(full))
    assert result.exit_code == 2
    assert f"{full}: cannot write: No space left on device" in result.stderr
    assert "Traceback" not in result.stderr
    assert stat.S_ISCHR(full.lstat().st_mode)
    assert leftovers(tmp_path) == []


def test_dev_stdout_means_standard_output(cli: Cli, sqlite_url: list[str]) -> None:
    for name in ("/dev/stdout", "-"):
        result = cli(*sqlite_url, "export", "--output", name)
        assert result.exit_code == 0, result.stderr
        assert exported_ids(result.stdout) == list(IDS)


def test_missing_directory_and_directory_target(
    cli: Cli, sqlite_url: list[str], tmp_path: Path
) -> None:
    result = cli(*sqlite_url, "export", "--output", str(tmp_path / "missing" / "x.jsonl"))
    assert result.exit_code == 2
    assert "cannot write: No such file or directory" in result.stderr
    assert not (tmp_path / "missing").exists()
    result = cli(*sqlite_url, "export", "--output", str(tmp_path))
    assert result.exit_code == 2 and "Is a directory" in result.stderr


def test_a_failed_export_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def export_that_fails() -> None:
        with open_output(out) as stream:
            stream.write("half of it")
            raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        export_that_fails()
    assert out.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_non_finite_numbers_stored_by_an_older_version_are_skipped(
    cli: Cli, db_target: DbTarget, tmp_path: Path
) -> None:
    database = Database(db_target.url)
    database.upgrade()
    bad = parse_killmail(killmail(21))
    bad.attackers[0]["security_status"] = float("inf")  # what killsync <= 0.x let through
    with database.session() as session:
        save_killmails(session, [parse_killmail(killmail(20)), bad])
    database.close()
    out = tmp_path / "out.jsonl"
    result = cli("--database-url", db_target.url, "export", "--output", str(out))
    assert result.exit_code == 3
    assert "skipped: killmail 21:" in result.stderr
    assert exported_ids(out.read_text()) == [20]
    assert "Infinity" not in out.read_text()
