"""A rotated refresh token is never lost (issue 10, findings 1 and 9).

Against the simulator over real HTTP, on SQLite and PostgreSQL: the SSO's key set answering
503, a host clock 25 minutes (or 2 hours) ahead, a refresh that loses the killmail scope.
Each "process" is its own Accounts and SsoClient (no cached keys) on the shared database.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from killcli.accounts import KILLMAIL_SCOPE, Accounts
from killcli.clock import SystemClock
from killcli.db import Database
from killcli.db.models import Character
from killcli.errors import ExitCode, NeedsLogin, SsoError, TokenUnverified
from killcli.sso import SsoClient, TokenCipher, generate_key
from killsim import SimServer
from killsim.scenario import READ_CORP_KILLMAILS
from tests.conftest import CliResult, DbTarget, sim_environ
from tests.test_accounts import TOKEN_ROUTE, expire_access_token, first_character

HOST_AHEAD_S = 25 * 60
Cli = Callable[..., CliResult]
MakeAccounts = Callable[..., Accounts]


@pytest.fixture
def sim(start_sim: Any) -> SimServer:
    return start_sim("smoke", access_token_lifetime_s=1200)  # type: ignore[no-any-return]


@pytest.fixture
def cipher() -> TokenCipher:
    return TokenCipher([generate_key()])


@pytest.fixture
def host(db: Database, sim: SimServer, cipher: TokenCipher) -> Any:
    """``host(ahead_s=0)``: a new process on a host whose clock is ``ahead_s`` off."""
    made: list[SsoClient] = []

    def make(*, ahead_s: float = 0.0) -> Accounts:
        # no real sleeping between the client's bounded retries
        clock = SystemClock(wall=lambda: time.time() + ahead_s, sleep=lambda _s: None)
        sso = SsoClient(sim.sso_url, sim.client_id, sim.client_secret, clock=clock)
        made.append(sso)
        return Accounts(db, sso, cipher, clock=clock)

    yield make
    for sso in made:
        sso.close()


def stored(db: Database, character_id: int) -> Character:
    with db.session() as session:
        character = session.get(Character, character_id)
        assert character is not None
        return character


def refresh_token_of(db: Database, cipher: TokenCipher, character_id: int) -> str:
    return cipher.decrypt(stored(db, character_id).refresh_token_enc or "")


def token_answers(sim: SimServer, status: int) -> int:
    return sim.stats.snapshot().count(TOKEN_ROUTE, status)


def test_jwks_down_during_refresh_keeps_the_rotated_token(
    sim: SimServer, host: MakeAccounts, db: Database, cipher: TokenCipher
) -> None:
    cid = first_character(sim)
    host().add_refresh_token(sim.issue_refresh_token(cid))
    before = refresh_token_of(db, cipher, cid)
    sim.faults.fail_jwks(503)
    worker = host()  # a process that has not cached the key set yet
    result = worker.refresh(cid)
    assert not result.ok and result.retryable
    assert result.reason is not None and "could not be verified" in result.reason
    assert "signing keys failed after 3 attempts: HTTP 503" in result.reason
    row = stored(db, cid)
    assert row.status == "active" and row.status_reason is None
    assert row.last_error is not None and "not verified yet (will retry)" in row.last_error
    rotated = refresh_token_of(db, cipher, cid)
    assert rotated != before  # the SSO's new refresh token was kept
    sim.faults.fail_jwks(None)
    assert worker.refresh(cid).ok  # spends the rotated token: the SSO accepts it
    assert token_answers(sim, 400) == 0  # no invalid_grant, ever
    assert stored(db, cid).last_error is None
    with pytest.raises(NeedsLogin, match="invalid_grant"):  # the old one is dead indeed
        worker.sso.request_refresh(before)


def test_a_pending_token_is_verified_without_spending_the_grant_again(
    sim: SimServer, host: MakeAccounts, db: Database
) -> None:
    cid = first_character(sim)
    host().add_refresh_token(sim.issue_refresh_token(cid))
    expire_access_token(db, cid)
    sim.faults.fail_jwks(503)
    with pytest.raises(TokenUnverified, match="could not be verified"):
        host().access_token(cid)
    row = stored(db, cid)
    assert row.access_token_enc is not None and row.access_expires_at is None  # pending
    sim.faults.fail_jwks(None)
    spent = token_answers(sim, 200)
    other = host()  # another worker, or the first one restarted after being killed
    token = other.access_token(cid)
    assert token_answers(sim, 200) == spent  # verified what was stored, no new refresh
    assert other.sso.validate_access_token(token).character_id == cid
    row = stored(db, cid)
    assert row.access_expires_at is not None and row.last_error is None


def test_host_clock_25_minutes_ahead_refreshes_on_the_sso_clock(
    sim: SimServer, host: MakeAccounts, db: Database
) -> None:
    cid = first_character(sim)
    host().add_refresh_token(sim.issue_refresh_token(cid))
    skewed = host(ahead_s=HOST_AHEAD_S)
    result = skewed.refresh(cid)  # the new token's exp is 5 minutes in this host's past
    assert result.ok, result.reason
    host_now = skewed.sso.sso_now().timestamp() - (skewed.sso.sso_clock_offset_s or 0)
    row = stored(db, cid)
    assert row.access_expires_at is not None
    lasts_s = row.access_expires_at.timestamp() - host_now
    assert 1190 <= lasts_s <= 1200  # 20 minutes on this host's clock
    assert row.last_error is not None
    assert re.search(r"150[01] s ahead of the EVE SSO's \(its Date header\)", row.last_error)
    spent = token_answers(sim, 200)
    assert skewed.access_token(cid)  # usable on this host's clock: no second refresh
    assert token_answers(sim, 200) == spent


def test_a_skewed_host_verifies_a_pending_token_on_the_sso_clock(
    sim: SimServer, host: MakeAccounts, db: Database
) -> None:
    cid = first_character(sim)
    host().add_refresh_token(sim.issue_refresh_token(cid))
    expire_access_token(db, cid)
    sim.faults.fail_jwks(503)
    with pytest.raises(TokenUnverified):
        host(ahead_s=HOST_AHEAD_S).access_token(cid)
    sim.faults.fail_jwks(None)
    restarted = host(ahead_s=HOST_AHEAD_S)  # knows nothing of the SSO's clock yet
    spent = token_answers(sim, 200)
    assert restarted.access_token(cid)
    assert restarted.access_token(cid)  # the stored expiry is on this host's clock
    assert token_answers(sim, 200) == spent


def test_host_clock_hours_ahead_keeps_the_token_and_names_the_skew(
    sim: SimServer, host: MakeAccounts, db: Database, cipher: TokenCipher
) -> None:
    cid = first_character(sim)
    host().add_refresh_token(sim.issue_refresh_token(cid))
    before = refresh_token_of(db, cipher, cid)
    result = host(ahead_s=2 * 3600).refresh(cid)
    assert not result.ok and result.retryable
    assert result.reason is not None and "expired" in result.reason
    assert "fix the host clock (NTP)" in result.reason
    row = stored(db, cid)
    assert row.status == "active" and row.last_error is not None
    assert "ahead of the EVE SSO's" in row.last_error
    assert refresh_token_of(db, cipher, cid) != before
    assert host().refresh(cid).ok  # the clock fixed: the kept token works
    assert token_answers(sim, 400) == 0


def test_a_refresh_that_lost_the_killmail_scope_needs_login(
    sim: SimServer, host: MakeAccounts, db: Database, cipher: TokenCipher
) -> None:
    cid = first_character(sim)
    host().add_refresh_token(sim.issue_refresh_token(cid))
    before = refresh_token_of(db, cipher, cid)
    sim.faults.withhold_scopes(KILLMAIL_SCOPE, character_id=cid)
    worker = host()
    result = worker.refresh(cid)
    assert not result.ok and not result.retryable
    assert result.reason is not None and "scope removed" in result.reason
    row = stored(db, cid)
    assert (row.status, row.status_reason) == ("needs_login", "scope removed")
    assert row.scopes == ""
    assert row.last_error == f"SSO: the new token no longer grants {KILLMAIL_SCOPE}"
    rotated = refresh_token_of(db, cipher, cid)
    assert rotated != before  # kept all the same: the grant is not ours to throw away
    assert worker.sso.request_refresh(rotated).refresh_token  # and the SSO still takes it
    with pytest.raises(NeedsLogin, match="scope removed"):
        worker.access_token(cid)


def test_scopes_are_refreshed_from_each_new_token(
    sim: SimServer, host: MakeAccounts, db: Database
) -> None:
    cid = first_character(sim)
    host().add_refresh_token(sim.issue_refresh_token(cid, [KILLMAIL_SCOPE, READ_CORP_KILLMAILS]))
    assert set(stored(db, cid).scopes.split()) == {KILLMAIL_SCOPE, READ_CORP_KILLMAILS}
    sim.faults.withhold_scopes(READ_CORP_KILLMAILS)
    assert host().refresh(cid).ok
    assert stored(db, cid).scopes == KILLMAIL_SCOPE


def test_adding_a_character_while_jwks_is_down_does_not_spend_its_token(
    sim: SimServer, host: MakeAccounts
) -> None:
    cid = first_character(sim)
    token = sim.issue_refresh_token(cid)
    sim.faults.fail_jwks(503)
    with pytest.raises(SsoError, match="signing keys failed") as caught:
        host().add_refresh_token(token)
    assert caught.value.exit_code == ExitCode.ESI_UNAVAILABLE
    assert token_answers(sim, 200) == 0  # checked before the SSO could rotate it
    sim.faults.fail_jwks(None)
    assert host().add_refresh_token(token).character_id == cid  # the same token still works


def test_refresh_token_all_with_jwks_down_then_up(
    cli: Cli,
    sim: SimServer,
    db_target: DbTarget,
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in sim_environ(sim, tmp_path / "home", db_target.url).items():
        monkeypatch.setenv(key, value)
    ids = list(sim.world.ground_truth())[:2]
    for cid in ids:
        added = cli("users", "add", "--refresh-token", "-", stdin=sim.issue_refresh_token(cid))
        assert added.exit_code == 0, added.stderr
    sim.faults.fail_jwks(503)
    down = cli("refresh-token", "--all")
    assert down.exit_code == 5, down.stdout + down.stderr
    assert down.stdout.count("RETRY LATER: ") == 2 and "NEEDS LOGIN" not in down.stdout
    assert "Traceback" not in down.stderr
    listed = json.loads(cli("users", "list", "--json").stdout)["data"]
    assert {row["status"] for row in listed} == {"active"}
    assert all("not verified yet" in row["last_error"] for row in listed)
    sim.faults.fail_jwks(None)
    up = cli("refresh-token", "--all", "--json")
    assert up.exit_code == 0, up.stdout + up.stderr
    assert [r["ok"] for r in json.loads(up.stdout)["data"]] == [True, True]
    assert token_answers(sim, 400) == 0
    sim.faults.withhold_scopes(KILLMAIL_SCOPE, character_id=ids[0])
    lost = cli("refresh-token", str(ids[0]), str(ids[1]))
    assert lost.exit_code == 4, lost.stdout + lost.stderr
    first, second = lost.stdout.splitlines()
    assert first.endswith(
        f"NEEDS LOGIN: {stored(db, ids[0]).name} ({ids[0]}) needs to log in "
        f"again: scope removed ({KILLMAIL_SCOPE} is no longer granted)"
    )
    assert "\tok, expires " in second
