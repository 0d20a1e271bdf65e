"""Characters and tokens against the simulated SSO: refresh, rotation, needs-login."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from killcli.accounts import Accounts
from killcli.config import load_settings
from killcli.db import Database
from killcli.db.models import Character
from killcli.db.types import utcnow
from killcli.errors import InputError, NeedsLogin, UsageError
from killcli.runtime import make_accounts
from killsim import SimServer
from tests.conftest import CliResult, DbTarget, sim_environ

TOKEN_ROUTE = "/sso/v2/oauth/token"
Cli = Callable[..., CliResult]


@pytest.fixture
def sim(start_sim: Any) -> SimServer:
    return start_sim("smoke", access_token_lifetime_s=1200)  # type: ignore[no-any-return]


@pytest.fixture
def accounts_for(
    db: Database, db_target: DbTarget, tmp_path: Path, sim: SimServer
) -> Iterator[Callable[[], Accounts]]:
    """A new Accounts each call: like separate worker processes on one database."""
    made: list[Accounts] = []
    environ = sim_environ(sim, tmp_path / "home", db_target.url)

    def make() -> Accounts:
        accounts = make_accounts(load_settings(environ=environ), db)
        made.append(accounts)
        return accounts

    yield make
    for accounts in made:
        accounts.sso.close()


def first_character(sim: SimServer) -> int:
    return next(iter(sim.world.ground_truth()))


def expire_access_token(db: Database, character_id: int) -> None:
    with db.session() as s:
        s.execute(
            update(Character)
            .where(Character.character_id == character_id)
            .values(access_expires_at=utcnow())
        )


def test_add_validates_and_stores_identity(sim: SimServer, accounts_for: Any) -> None:
    cid = first_character(sim)
    result = accounts_for().add_refresh_token(sim.issue_refresh_token(cid) + "\n")
    assert result.character_id == cid
    assert result.created
    assert result.name == sim.world.character(cid).name  # type: ignore[union-attr]
    again = accounts_for().add_refresh_token(sim.issue_refresh_token(cid))
    assert not again.created and not again.owner_changed


def test_missing_scope_and_bad_tokens_are_refused(sim: SimServer, accounts_for: Any) -> None:
    cid = first_character(sim)
    with pytest.raises(UsageError, match=r"did not grant esi-killmails\.read_killmails\.v1"):
        accounts_for().add_refresh_token(sim.issue_refresh_token(cid, scopes=["publicData"]))
    with pytest.raises(InputError, match="SSO refused the refresh token"):
        accounts_for().add_refresh_token("not-a-token-the-sso-knows")
    with pytest.raises(InputError, match="not a refresh token"):
        accounts_for().add_refresh_token("\x00\x01")


def test_expired_access_token_is_refreshed_before_use(
    sim: SimServer, accounts_for: Any, db: Database
) -> None:
    cid = first_character(sim)
    accounts = accounts_for()
    accounts.add_refresh_token(sim.issue_refresh_token(cid))
    calls = sim.stats.snapshot().count(TOKEN_ROUTE)
    first = accounts.access_token(cid)
    assert sim.stats.snapshot().count(TOKEN_ROUTE) == calls  # still fresh: no refresh
    expire_access_token(db, cid)
    second = accounts.access_token(cid)
    assert second != first
    assert sim.stats.snapshot().count(TOKEN_ROUTE) == calls + 1
    assert accounts.sso.validate_access_token(second).character_id == cid


def test_rotation_survives_concurrent_refreshes(
    sim: SimServer, accounts_for: Any, db: Database
) -> None:
    cid = first_character(sim)
    accounts_for().add_refresh_token(sim.issue_refresh_token(cid))
    workers = [accounts_for() for _ in range(6)]  # six "processes" sharing the database
    for round_ in range(3):
        expire_access_token(db, cid)
        before = sim.stats.snapshot().count(TOKEN_ROUTE, 200)
        barrier = threading.Barrier(len(workers))
        tokens: list[str] = []
        errors: list[BaseException] = []

        def run(
            accounts: Accounts,
            barrier: threading.Barrier = barrier,
            tokens: list[str] = tokens,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                tokens.append(accounts.access_token(cid))
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], round_
        assert len(set(tokens)) == 1  # one refresh, everyone got its result
        assert sim.stats.snapshot().count(TOKEN_ROUTE, 200) == before + 1
        assert sim.stats.snapshot().count(TOKEN_ROUTE, 400) == 0  # never a stale rotated token
    assert workers[0].refresh(cid).ok  # the stored (rotated) refresh token still works


def test_revoked_character_needs_login_after_one_attempt(
    sim: SimServer, accounts_for: Any, db: Database
) -> None:
    cid = first_character(sim)
    accounts = accounts_for()
    accounts.add_refresh_token(sim.issue_refresh_token(cid))
    sim.revoke(cid)
    expire_access_token(db, cid)
    before = sim.stats.snapshot().count(TOKEN_ROUTE)
    with pytest.raises(NeedsLogin, match="invalid_grant"):
        accounts.access_token(cid)
    for _ in range(3):  # never retried in a loop
        with pytest.raises(NeedsLogin):
            accounts.access_token(cid)
    assert sim.stats.snapshot().count(TOKEN_ROUTE) == before + 1
    with db.session() as s:
        character = s.get(Character, cid)
        assert character is not None
        assert character.status == "needs_login"
        assert character.status_reason == "invalid_grant"
        assert character.status_changed_at is not None
    # logging in again makes it active
    accounts.add_refresh_token(sim.issue_refresh_token(cid))
    assert accounts.access_token(cid)


def test_sold_character_is_a_new_owner(sim: SimServer, accounts_for: Any) -> None:
    cid = first_character(sim)
    accounts = accounts_for()
    accounts.add_refresh_token(sim.issue_refresh_token(cid))
    sim.sell_character(cid)
    result = accounts.add_refresh_token(sim.issue_refresh_token(cid))
    assert result.owner_changed


def test_database_holds_no_plaintext_token(
    sim: SimServer, accounts_for: Any, db: Database, db_target: DbTarget
) -> None:
    cid = first_character(sim)
    refresh = sim.issue_refresh_token(cid)
    accounts = accounts_for()
    accounts.add_refresh_token(refresh)
    access = accounts.access_token(cid)
    with db.session() as s:
        row = s.execute(select(Character.refresh_token_enc, Character.access_token_enc)).one()
    assert refresh not in json.dumps(list(row)) and access not in json.dumps(list(row))
    if db_target.kind == "sqlite":
        raw = Path(db.engine.url.database or "").read_bytes()
        wal = Path(str(db.engine.url.database) + "-wal")
        raw += wal.read_bytes() if wal.exists() else b""
        assert refresh.encode() not in raw
        assert access.encode()[:40] not in raw


def test_users_commands(
    cli: Cli, sim: SimServer, db_target: DbTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in sim_environ(sim, tmp_path / "home", db_target.url).items():
        monkeypatch.setenv(key, value)
    if db_target.kind == "postgresql":
        assert cli("db", "upgrade").exit_code == 0
    ids = list(sim.world.ground_truth())
    added = cli("users", "add", "--refresh-token", "-", stdin=sim.issue_refresh_token(ids[0]))
    assert added.exit_code == 0, added.stderr
    token_file = tmp_path / "tokens.jsonl"
    token_file.write_text(
        sim.issue_refresh_token(ids[1])
        + "\n"
        + json.dumps({"refresh_token": sim.issue_refresh_token(ids[2])})
        + "\n"
        + "garbage-token\n{not json\n"
    )
    imported = cli("users", "import", str(token_file), "--json")
    assert imported.exit_code == 3
    assert json.loads(imported.stdout)["data"] == {"added": 2, "updated": 0, "rejected": 2}
    assert "line 3: rejected" in imported.stderr and "line 4: rejected" in imported.stderr
    listed = cli("users", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    listing = json.loads(listed.stdout)["data"]
    assert {row["character_id"] for row in listing} == set(ids[:3])
    assert all(row["status"] == "active" for row in listing)
    refreshed = cli("refresh-token", "--all", "--json")
    assert refreshed.exit_code == 0, refreshed.stderr
    assert all(r["ok"] for r in json.loads(refreshed.stdout)["data"])
    sim.revoke(ids[1])
    failed = cli("refresh-token", str(ids[0]), str(ids[1]))
    assert failed.exit_code == 4
    assert "NEEDS LOGIN: " in failed.stdout and "invalid_grant" in failed.stdout
    unknown = cli("refresh-token", "999")
    assert unknown.exit_code == 2 and "character 999 is not tracked" in unknown.stderr
    assert cli("users", "disable", str(ids[0])).exit_code == 0
    statuses = {
        r["character_id"]: r["status"]
        for r in json.loads(cli("users", "list", "--json").stdout)["data"]
    }
    assert statuses[ids[0]] == "disabled"
    assert cli("users", "enable", str(ids[0])).exit_code == 0
    refused = cli("users", "enable", str(ids[1]))  # revoked above: needs a login, not enable
    assert refused.exit_code == 2 and "needs to log in again" in refused.stderr
    removed = cli("users", "remove", str(ids[2]))
    assert removed.exit_code == 0
    assert "Traceback" not in unknown.stderr + failed.stderr


def test_sso_unreachable_is_one_line(
    cli: Cli, sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sim_environ(sim, tmp_path / "home", f"sqlite:///{tmp_path / 'k.db'}")
    env["KILLSYNC_SSO_BASE_URL"] = "http://127.0.0.1:9"  # discard port: nothing listens
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = cli("users", "add", "--refresh-token", "-", stdin="whatever")
    assert result.exit_code == 5
    assert len(result.stderr.strip().splitlines()) == 1
    assert "whatever" not in result.stderr
