"""`killsync import` / `export` / `db` / `config` as a user runs them."""

from __future__ import annotations

import bz2
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from killcli.killmail import canonical_json
from tests.conftest import CliResult, DbTarget
from tests.factories import killmail
from tests.refdata import killmail_sample_sets

Cli = Callable[..., CliResult]
SAMPLE_SETS = killmail_sample_sets()


def write_archive(
    path: Path, bodies: list[dict[str, object]], *, extra: bytes | None = None
) -> None:
    with tarfile.open(path, "w:bz2") as tar:
        for body in bodies:
            data = json.dumps({**body, "killmail_hash": "ab" * 20}).encode()
            info = tarfile.TarInfo(f"killmails/{body['killmail_id']}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            info = tarfile.TarInfo("killmails/broken.json")
            info.size = len(extra)
            tar.addfile(info, io.BytesIO(extra))


@pytest.mark.parametrize("sample_set", list(SAMPLE_SETS))
def test_import_then_export_reproduces_samples(
    cli: Cli, db_target: DbTarget, tmp_path: Path, sample_set: str
) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    for name, text in SAMPLE_SETS[sample_set].items():
        (samples / f"{name}.json").write_text(text, encoding="utf-8")
    originals = {
        json.loads(p.read_text())["killmail_id"]: p.read_text() for p in samples.glob("*.json")
    }
    count = len(originals)
    url = ["--database-url", db_target.url]
    if db_target.kind == "postgresql":
        assert cli(*url, "db", "upgrade").exit_code == 0
    result = cli(*url, "import", str(samples), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)["data"]
    assert summary == {"read": count, "new": count, "already_present": 0, "rejected": 0}
    again = json.loads(cli(*url, "import", str(samples), "--json").stdout)["data"]
    assert again["new"] == 0 and again["already_present"] == count

    out = tmp_path / "out.jsonl"
    assert cli(*url, "export", "--output", str(out)).exit_code == 0
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(exported) == len(originals)
    for body in exported:
        original = originals[body["killmail_id"]]
        assert canonical_json(body) == canonical_json(json.loads(original))
        assert json.dumps(body, indent=2, ensure_ascii=False) == original.rstrip("\n")

    as_array = cli(*url, "export", "--format", "json")
    assert [b["killmail_id"] for b in json.loads(as_array.stdout)] == sorted(originals)


def test_import_eve_ref_archive_and_jsonl(cli: Cli, db_target: DbTarget, tmp_path: Path) -> None:
    url = ["--database-url", db_target.url]
    archive = tmp_path / "killmails-2026-01-02.tar.bz2"
    write_archive(archive, [killmail(i) for i in (1, 2, 3)], extra=b"{not json")
    lines = tmp_path / "more.jsonl.bz2"
    good = json.dumps(killmail(4))
    bad = json.dumps({**killmail(5), "victim": "nobody"})
    lines.write_bytes(bz2.compress(f"{good}\n\n{bad}\n{{oops\n".encode()))
    if db_target.kind == "postgresql":
        cli(*url, "db", "upgrade")
    result = cli(*url, "import", str(archive), str(lines), "--json")
    assert result.exit_code == 3  # PARTIAL: some records rejected, the rest saved
    assert json.loads(result.stdout)["data"] == {
        "read": 5,
        "new": 4,
        "already_present": 0,
        "rejected": 3,
    }
    assert "killmails-2026-01-02.tar.bz2:killmails/broken.json: bad JSON" in result.stderr
    assert "more.jsonl.bz2:line 3: victim: expected an object" in result.stderr
    assert "more.jsonl.bz2:line 4: bad JSON" in result.stderr
    exported = cli(*url, "export").stdout.splitlines()
    assert [json.loads(x) for x in exported] == [killmail(i) for i in (1, 2, 3, 4)]


def test_corrupt_archive_is_one_line_and_keeps_other_files(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "killmails-2026-01-03.tar.bz2"
    broken.write_bytes(b"BZh91AY&SY this is not bzip2")
    good = tmp_path / "good.json"
    good.write_text(json.dumps([killmail(7), killmail(8)]))
    result = cli("import", str(broken), str(good), "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["data"]["new"] == 2
    assert "killmails-2026-01-03.tar.bz2: cannot read:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["import", "/nonexistent/file.json"], 2, "no such file or directory"),
        (["--database-url", "nope://x", "export"], 2, "KILLSYNC_DATABASE_URL"),
        (["--database-url", "mysql://u@h/db", "export"], 2, "unsupported database 'mysql'"),
        (["--broker-url", "redis://x", "config", "show"], 2, "KILLSYNC_BROKER_URL"),
        (["export", "--since", "last week"], 2, "--since: not a date"),
        (["no-such-command"], 2, "No such command"),
    ],
)
def test_bad_inputs_are_one_clear_line(cli: Cli, args: list[str], code: int, message: str) -> None:
    result = cli(*args)
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_json_file(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"killmail_id": 1,')
    result = cli("import", str(bad))
    assert result.exit_code == 3
    assert f"rejected: {bad}:1:" in result.stderr and "bad JSON" in result.stderr


def test_export_to_unwritable_path_loses_nothing(cli: Cli, tmp_path: Path) -> None:
    assert cli("db", "upgrade").exit_code == 0
    result = cli("export", "--output", str(tmp_path / "missing-dir" / "x.jsonl"))
    assert result.exit_code == 2
    assert "cannot write" in result.stderr


def test_malformed_config_file_names_the_key(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('esi_base_url = "ftp://esi"\n')
    result = cli("--config", str(config), "config", "show")
    assert result.exit_code == 2
    assert "KILLSYNC_ESI_BASE_URL: not an http(s) URL" in result.stderr
    config.write_text("database_url = [\n")
    assert "not valid TOML" in cli("--config", str(config), "config", "show").stderr
    config.write_text('colour = "blue"\n')
    assert "unknown key 'colour'" in cli("--config", str(config), "config", "show").stderr


def test_config_show_masks_secrets_and_names_sources(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('client_id = "from-file"\ncontact = "file@example.org"\n')
    monkeypatch.setenv("KILLSYNC_CONTACT", "env@example.org")
    monkeypatch.setenv("KILLSYNC_CLIENT_SECRET", "hunter2")
    monkeypatch.setenv("KILLSYNC_BROKER_URL", "amqp://guest:guest@127.0.0.1/")
    result = cli("--config", str(config), "config", "show", "--json")
    settings = {row["key"]: row for row in json.loads(result.stdout)["data"]["settings"]}
    assert settings["client_id"] == {
        **settings["client_id"],
        "value": "from-file",
        "source": "file",
    }
    assert settings["contact"]["value"] == "env@example.org"
    assert settings["contact"]["source"] == "env"
    assert settings["client_secret"]["value"] == "***"
    assert settings["broker_url"]["value"] == "amqp://guest:***@127.0.0.1/"
    assert "hunter2" not in result.stdout
    flagged = cli(
        "--config", str(config), "--database-url", "sqlite:///x.db", "config", "show", "--json"
    )
    rows = {r["key"]: r for r in json.loads(flagged.stdout)["data"]["settings"]}
    assert rows["database_url"]["source"] == "flag"


def test_db_upgrade_is_idempotent_and_status(cli: Cli, db_target: DbTarget) -> None:
    url = ["--database-url", db_target.url]
    assert cli(*url, "db", "upgrade").exit_code == 0
    second = cli(*url, "db", "upgrade")
    assert second.exit_code == 0 and "up to date" in second.stderr
    status = json.loads(cli(*url, "db", "status", "--json").stdout)["data"]
    assert status["up_to_date"] is True


def test_out_of_date_schema_says_run_db_upgrade(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert cli("--database-url", url, "db", "upgrade").exit_code == 0
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    engine.dispose()
    result = cli("--database-url", url, "export")
    assert result.exit_code == 6
    assert "run `killsync db upgrade`" in result.stderr


def test_version_and_help(cli: Cli) -> None:
    version = cli("--version")
    assert version.exit_code == 0 and version.stdout.startswith("killsync ")
    assert cli().exit_code == 0
