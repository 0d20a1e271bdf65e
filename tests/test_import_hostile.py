"""`killsync import` against hostile and broken input: each bad record or file is one
clear line, everything else is stored, and memory stays bounded."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from killcli import importer
from tests.conftest import REPO, CliResult, DbTarget
from tests.factories import killmail

Cli = Callable[..., CliResult]


def jsonl(*bodies: dict[str, object] | str) -> str:
    return "".join((b if isinstance(b, str) else json.dumps(b)) + "\n" for b in bodies)


def run_import(cli: Cli, db_target: DbTarget, *paths: Path) -> tuple[CliResult, dict[str, int]]:
    url = ["--database-url", db_target.url]
    assert cli(*url, "db", "upgrade").exit_code == 0
    result = cli(*url, "import", *map(str, paths), "--json")
    assert "Traceback" not in result.stderr
    return result, json.loads(result.stdout)["data"] if result.stdout else {}


def test_nan_costs_only_its_own_record(cli: Cli, db_target: DbTarget, tmp_path: Path) -> None:
    lines = [json.dumps(killmail(i, attackers=3, items=2)) for i in range(1, 62)]
    lines[30] = lines[30].replace('"security_status": ', '"security_status": NaN, "x": ', 1)
    source = tmp_path / "batch.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result, summary = run_import(cli, db_target, source)
    assert result.exit_code == 3
    assert summary == {"read": 60, "new": 60, "already_present": 0, "rejected": 1}
    assert f"{source}:line 31: bad JSON: NaN is not a JSON number" in result.stderr
    again, summary = run_import(cli, db_target, source)  # a rerun: same outcome, no error
    assert again.exit_code == 3
    assert summary == {"read": 60, "new": 0, "already_present": 60, "rejected": 1}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"killmail_id": Infinity}', "bad JSON: Infinity is not a JSON number"),
        ("[" * 200_000 + "]" * 200_000, "bad JSON: nested too deeply"),
        ('{"killmail_id": 1' + "0" * 5000 + "}", "bad JSON: integer too large"),
        (
            json.dumps({**killmail(90), "killmail_time": "0001-01-01T00:00:00+05:00"}),
            "killmail_time: '0001-01-01T00:00:00+05:00' is out of range in UTC",
        ),
        (json.dumps({**killmail(91), "future": 10**30}), "future: an integer does not fit"),
        (
            json.dumps(killmail(92)).replace(
                '"security_status": ', '"security_status": 1e999, "_": ', 1
            ),
            "attackers[0].security_status: inf is not a finite",
        ),
        (json.dumps({**killmail(93), "killmail_hash": "zz"}), "killmail_hash: expected"),
    ],
)
def test_each_hostile_record_is_one_line(
    cli: Cli, db_target: DbTarget, tmp_path: Path, line: str, message: str
) -> None:
    source = tmp_path / "hostile.jsonl"
    source.write_text(jsonl(killmail(1), line, killmail(2)))
    result, summary = run_import(cli, db_target, source)
    assert result.exit_code == 3
    assert summary["new"] == 2 and summary["rejected"] == 1
    assert f"{source}:line 2: " in result.stderr and message in result.stderr


def test_deep_json_file_and_bad_utf8_line(cli: Cli, db_target: DbTarget, tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b'{"a": "\xff"}\n' + json.dumps(killmail(3)).encode() + b"\n")
    result, summary = run_import(cli, db_target, deep, mixed)
    assert result.exit_code == 3
    assert summary["new"] == 1 and summary["rejected"] == 2
    assert f"{deep}:[0]: bad JSON: nested too deeply" in result.stderr
    assert f"{mixed}:line 1: bad JSON: not UTF-8" in result.stderr


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_broken_compressed_files_are_one_line(
    cli: Cli, db_target: DbTarget, tmp_path: Path, damage: str
) -> None:
    text = jsonl(*(killmail(i) for i in range(10, 40))).encode()
    gz, bz = gzip.compress(text), bz2.compress(text)
    if damage == "corrupt":
        gz = gz[:20] + bytes(b ^ 0x5A for b in gz[20:60]) + gz[60:]
        bz = bz[:40] + bytes(b ^ 0x5A for b in bz[40:80]) + bz[80:]
    else:
        gz, bz = gz[: len(gz) // 2], bz[: len(bz) // 2]
    (tmp_path / "a.jsonl.gz").write_bytes(gz)
    (tmp_path / "b.jsonl.bz2").write_bytes(bz)
    (tmp_path / "c.tar.bz2").write_bytes(bz)  # a broken archive
    good = tmp_path / "good.json"
    good.write_text(json.dumps([killmail(50), killmail(51)]))
    files = [tmp_path / n for n in ("a.jsonl.gz", "b.jsonl.bz2", "c.tar.bz2")] + [good]
    result, summary = run_import(cli, db_target, *files)
    assert result.exit_code == 3
    for name in ("a.jsonl.gz", "b.jsonl.bz2", "c.tar.bz2"):
        assert f"{tmp_path / name}: cannot read: " in result.stderr
    assert summary["new"] >= 2  # the good file, and whatever came before the damage


def test_json_arrays_are_streamed_element_by_element(
    cli: Cli, db_target: DbTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "READ_CHUNK", 97)  # elements always straddle the window
    bodies = [killmail(i, attackers=2, items=1) for i in range(60, 90)]
    source = tmp_path / "array.json.gz"
    source.write_bytes(
        gzip.compress(("[\n " + " ,\n".join(map(json.dumps, bodies)) + "\n]\n").encode())
    )
    broken = tmp_path / "broken.json"
    broken.write_text("[" + json.dumps(killmail(95)) + " " + json.dumps(killmail(96)) + "]")
    result, summary = run_import(cli, db_target, source, broken)
    assert result.exit_code == 3
    assert summary == {"read": 31, "new": 31, "already_present": 0, "rejected": 1}
    assert f"{broken}:[1]: bad JSON: expected ','" in result.stderr


def test_oversized_records_end_their_file(
    cli: Cli, db_target: DbTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "MAX_RECORD_BYTES", 20_000)
    small, big = killmail(1, attackers=2, items=1), killmail(2, attackers=200, items=100)
    lines = tmp_path / "lines.jsonl"
    lines.write_text(jsonl(small, big, killmail(3)))
    array = tmp_path / "array.json"
    array.write_text(json.dumps([killmail(4, attackers=2, items=1), big]))
    single = tmp_path / "single.json"
    single.write_text(json.dumps(big))
    archive = tmp_path / "killmails-2026-01-01.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        for body in (killmail(5, attackers=2, items=1), big):
            data = json.dumps(body).encode()
            info = tarfile.TarInfo(f"killmails/{body['killmail_id']}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result, summary = run_import(cli, db_target, lines, array, single, archive)
    assert result.exit_code == 3
    assert summary["new"] == 3  # 1, 4 and 5: what came before each oversized record
    limit = "larger than 0 MiB; rest of the file not read"
    assert f"{lines}:line 2: line {limit}" in result.stderr
    assert f"{array}:[1]: array element {limit}" in result.stderr
    assert f"{single}: file {limit}" in result.stderr
    assert f"{archive}:killmails/2.json: member {limit}" in result.stderr


# -- a bz2 bomb under a memory cap ---------------------------------------------------------

BOMB_BYTES = 192 * 2**20  # zeros: about 200 bytes of bz2
MEMORY_CAP = 320 * 2**20  # address space: killsync needs ~120 MiB, reading a member whole 3x it


def write_bomb(path: Path) -> None:
    """An EVE Ref-shaped archive: a good member, one of BOMB_BYTES zeros, another good one."""
    compressor = bz2.BZ2Compressor(9)
    with path.open("wb") as out:

        def member(name: str, data: bytes | None, size: int) -> None:
            info = tarfile.TarInfo(name)
            info.size = size
            out.write(compressor.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
            if data is not None:
                out.write(compressor.compress(data))
            else:
                zeros = bytes(16 * 2**20)
                for _ in range(size // len(zeros)):
                    out.write(compressor.compress(zeros))
            out.write(compressor.compress(bytes(-size % 512)))

        first = json.dumps(killmail(1)).encode()
        member("killmails/1.json", first, len(first))
        member("killmails/bomb.json", None, BOMB_BYTES)
        last = json.dumps(killmail(2)).encode()
        member("killmails/2.json", last, len(last))
        out.write(compressor.compress(bytes(1024)))
        out.write(compressor.flush())


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def test_bz2_bomb_is_refused_within_a_memory_cap(tmp_path: Path) -> None:
    """Reading archives does not depend on the database: SQLite only."""
    bomb = tmp_path / "killmails-2026-02-02.tar.bz2"
    write_bomb(bomb)
    assert bomb.stat().st_size < 4096
    good = tmp_path / "good.jsonl"
    good.write_text(jsonl(killmail(3)))
    env = {
        **os.environ,
        "KILLSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'bomb.db'}",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "killcli", "import", str(bomb), str(good), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_cap_memory,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    assert (
        f"{bomb}:killmails/bomb.json: member larger than 16 MiB; rest of the file not read"
    ) in proc.stderr
    assert json.loads(proc.stdout)["data"]["new"] == 2  # 1 before the bomb, and good.jsonl
