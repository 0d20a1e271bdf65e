"""Adaptive cadence: tiers by the newest killmail's age, `queue --all`, the savings in
`stats`, the setting, and the migration's backfill. A manual clock (``run_queue(now=)``)
drives the due-ness decisions; SQLite and PostgreSQL both."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import insert, select

from killcli.accounts import KILLMAIL_SCOPE
from killcli.cadence import DEFAULT_CADENCE, CadenceError, parse_cadence
from killcli.config import load_settings
from killcli.db import Database
from killcli.db.models import Character, CharacterKillmail, table_of
from killcli.db.store import link_characters, save_killmails
from killcli.killmail import parse_killmail
from killcli.queue import Broker, open_broker
from killcli.scheduler import run_queue
from tests.conftest import CliResult, DbTarget
from tests.factories import killmail

CADENCE = parse_cadence(DEFAULT_CADENCE)
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LIST_CACHE = timedelta(minutes=5)
#: Character id -> age of its newest killmail at T0 (None: no killmail at all).
AGES: dict[int, timedelta | None] = {
    2_100_000_001: timedelta(days=1),
    2_100_000_010: timedelta(days=10),
    2_100_000_040: timedelta(days=40),
    2_100_000_100: timedelta(days=100),
    2_100_000_999: None,
}
ONE_DAY, TEN, FORTY, HUNDRED, NONE = AGES
Cli = Callable[..., CliResult]


def add_character(
    db: Database,
    character_id: int,
    *,
    newest: datetime | None,
    synced_at: datetime | None = T0,
    status: str = "active",
) -> None:
    """A character last synced at ``synced_at`` whose list cache then lasted 5 minutes."""
    with db.session() as s:
        s.add(
            Character(
                character_id=character_id,
                name=f"pilot {character_id}",
                owner_hash="owner",
                scopes=KILLMAIL_SCOPE,
                status=status,
                last_sync_at=synced_at,
                list_expires_at=None if synced_at is None else synced_at + LIST_CACHE,
                newest_killmail_at=newest,
            )
        )


def add_world(db: Database, now: datetime = T0) -> None:
    for cid, age in AGES.items():
        add_character(db, cid, newest=None if age is None else now - age)


@pytest.fixture
def broker(db: Database, db_target: DbTarget, tmp_path: Path) -> Iterator[Broker]:
    settings = load_settings(
        environ={"KILLSYNC_HOME": str(tmp_path / "home"), "KILLSYNC_DATABASE_URL": db_target.url}
    )
    with open_broker(settings, db) as opened:
        yield opened


def due_at(db: Database, broker: Broker, now: datetime) -> dict[int, str]:
    """Who `killsync queue --dry-run` would queue at ``now``: character id -> tier."""
    result = run_queue(db, broker, dry_run=True, now=now, cadence=CADENCE)
    return {c.character_id: c.tier for c in result.due}


# -- the setting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("7d=1h,30d=4h,90d=1d", "7d=1h,30d=4h,90d=1d"),
        (" 2d = 30m , 14d=2h ", "2d=30m,14d=2h"),
        ("168h=60m", "7d=1h"),
        ("OFF", "off"),
    ],
)
def test_good_cadence_specs(spec: str, canonical: str) -> None:
    assert parse_cadence(spec).spec == canonical


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("7d", "is not AGE=INTERVAL"),
        ("7x=1h", "is not a span"),
        ("7d=0h", "is not a span"),
        ("30d=4h,7d=1h", "ages must increase"),
        ("7d=4h,30d=1h", "cannot be polled more often"),
        ("7d=1m", "saves nothing"),
        ("7d=1h,", "is not AGE=INTERVAL"),
    ],
)
def test_bad_cadence_specs(spec: str, message: str) -> None:
    with pytest.raises(CadenceError, match=message):
        parse_cadence(spec)


def test_a_bad_cadence_setting_exits_2_with_one_line(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILLSYNC_CADENCE", "7d=1h,3d=4h")
    result = cli("config", "show")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "KILLSYNC_CADENCE" in lines[0] and "ages must increase" in lines[0]


def test_the_cadence_setting_is_shown_with_its_source(cli: Cli, isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True, exist_ok=True)
    (isolated_env / "config.toml").write_text('cadence = "2d=30m"\n')
    result = cli("config", "show")
    assert result.exit_code == 0
    assert "2d=30m" in result.stdout + result.stderr


# -- who is due when --------------------------------------------------------------------


def test_tiers_by_the_age_of_the_newest_killmail(db: Database, broker: Broker) -> None:
    add_world(db)
    assert due_at(db, broker, T0 + timedelta(minutes=3)) == {}  # every list still cached
    assert due_at(db, broker, T0 + timedelta(minutes=7)) == {ONE_DAY: "base"}
    assert due_at(db, broker, T0 + timedelta(minutes=55)) == {ONE_DAY: "base"}
    assert due_at(db, broker, T0 + timedelta(hours=1, minutes=2)) == {ONE_DAY: "base", TEN: "7d=1h"}
    assert due_at(db, broker, T0 + timedelta(hours=4, minutes=2)) == {
        ONE_DAY: "base",
        TEN: "7d=1h",
        FORTY: "30d=4h",
    }
    assert due_at(db, broker, T0 + timedelta(hours=23)) == {
        ONE_DAY: "base",
        TEN: "7d=1h",
        FORTY: "30d=4h",
    }
    assert due_at(db, broker, T0 + timedelta(days=1, minutes=2)) == {
        ONE_DAY: "base",
        TEN: "7d=1h",
        FORTY: "30d=4h",
        HUNDRED: "90d=1d",
        NONE: "90d=1d",
    }


def test_a_kill_ageing_past_a_threshold_moves_its_character_down(
    db: Database, broker: Broker
) -> None:
    add_character(db, ONE_DAY, newest=T0 - timedelta(days=6, hours=23))
    assert due_at(db, broker, T0 + timedelta(minutes=7)) == {ONE_DAY: "base"}
    # Two hours on the kill is over 7 days old: hourly, and the hour since the sync passed.
    assert due_at(db, broker, T0 + timedelta(hours=2)) == {ONE_DAY: "7d=1h"}


def test_off_polls_every_list_when_its_cache_expires(db: Database, broker: Broker) -> None:
    add_world(db)
    result = run_queue(
        db, broker, dry_run=True, now=T0 + timedelta(minutes=7), cadence=parse_cadence("off")
    )
    assert {c.character_id for c in result.due} == set(AGES)
    assert {c.tier for c in result.due} == {"base"}


def test_new_and_pending_characters_are_due_whatever_their_tier(
    db: Database, broker: Broker
) -> None:
    add_character(db, NONE, newest=None, synced_at=None)
    due = run_queue(db, broker, dry_run=True, now=T0, cadence=CADENCE).due
    assert [(c.character_id, c.reason, c.tier) for c in due] == [(NONE, "new", "90d=1d")]


def test_a_new_kill_resets_the_tier(db: Database, broker: Broker) -> None:
    add_character(db, FORTY, newest=T0 - timedelta(days=40))
    later = T0 + timedelta(hours=1, minutes=2)
    assert due_at(db, broker, later) == {}
    body = killmail(131_000_001)
    body["killmail_time"] = (T0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = killmail(131_000_000)
    old["killmail_time"] = "2026-01-01T00:00:00Z"
    with db.session() as s:  # what the engine's save step does
        save_killmails(s, [parse_killmail(body), parse_killmail(old)])
        link_characters(s, [(FORTY, 131_000_001)])
    assert newest_of(db, FORTY) == T0 + timedelta(hours=1)
    assert due_at(db, broker, later) == {FORTY: "base"}
    with db.session() as s:  # linking an older killmail never lowers it
        link_characters(s, [(FORTY, 131_000_000)])
    assert newest_of(db, FORTY) == T0 + timedelta(hours=1)


def newest_of(db: Database, character_id: int) -> datetime | None:
    with db.session() as s:
        return s.scalar(
            select(Character.newest_killmail_at).where(Character.character_id == character_id)
        )


def test_queue_all_queues_every_active_character_now(db: Database, broker: Broker) -> None:
    add_world(db)
    add_character(db, 2_100_001_000, newest=None, status="disabled")
    now = T0 + timedelta(minutes=1)  # nobody is due: every list is cached
    assert due_at(db, broker, now) == {}
    result = run_queue(db, broker, all_active=True, now=now, cadence=CADENCE)
    assert result.published == len(AGES)
    assert {c.character_id: c.tier for c in result.due} == {
        ONE_DAY: "base",
        TEN: "7d=1h",
        FORTY: "30d=4h",
        HUNDRED: "90d=1d",
        NONE: "90d=1d",
    }
    assert broker.queued_character_ids() == set(AGES)
    again = run_queue(db, broker, all_active=True, now=now, cadence=CADENCE)
    assert (again.published, again.already_queued) == (0, len(AGES))


# -- the CLI: queue --all, --dry-run tiers, stats ---------------------------------------


@pytest.fixture
def cli_db(db: Database, db_target: DbTarget, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setenv("KILLSYNC_DATABASE_URL", db_target.url)
    return db


def test_cli_queue_all_and_dry_run_tiers(cli: Cli, cli_db: Database) -> None:
    add_world(cli_db, now=datetime.now(UTC))
    dry = cli("queue", "--all", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    rows = json.loads(dry.stdout)["data"]["characters"]
    assert {r["character_id"]: r["tier"] for r in rows} == {
        ONE_DAY: "base",
        TEN: "7d=1h",
        FORTY: "30d=4h",
        HUNDRED: "90d=1d",
        NONE: "90d=1d",
    }
    table = cli("queue", "--all", "--dry-run")
    assert "tier" in table.stdout and "30d=4h" in table.stdout
    queued = cli("queue", "--all", "--json")
    assert json.loads(queued.stdout)["data"]["queued"] == len(AGES)
    both = cli("queue", "--all", "--character", str(TEN))
    assert both.exit_code == 2
    assert "--all and --character" in both.stderr


def test_stats_show_list_requests_saved_per_day(cli: Cli, cli_db: Database) -> None:
    add_world(cli_db, now=datetime.now(UTC))
    data = json.loads(cli("stats", "--json").stdout)["data"]["cadence"]
    tiers = {t["tier"]: t for t in data["tiers"]}
    assert {k: t["characters"] for k, t in tiers.items()} == {
        "base": 1,
        "7d=1h": 1,
        "30d=4h": 1,
        "90d=1d": 2,
    }
    # 288 polls a day at the 5-minute base: hourly saves 264, 4-hourly 282, daily 287.
    assert tiers["7d=1h"]["saved_requests_per_day"] == 264
    assert data["saved_requests_per_day"] == 264 + 282 + 2 * 287
    assert data["base_interval_s"] == 300
    human = cli("stats")
    assert "saves ~1,120 list requests/day" in human.stdout
    assert "90d=1d 2" in human.stdout


# -- the migration ------------------------------------------------------------------------


@pytest.fixture
def empty_database(
    db_target: DbTarget, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Database]:
    """A database with no schema yet (a fresh file, or an empty PostgreSQL schema)."""
    if db_target.kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = request.getfixturevalue("empty_pg_url")
    database = Database(url)
    yield database
    database.close()


def migrate(database: Database, revision: str) -> None:
    cfg = database._alembic_config()  # the test drives alembic itself
    with database.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def test_the_migration_backfills_newest_killmail_at(empty_database: Database) -> None:
    database = empty_database
    script = ScriptDirectory.from_config(database._alembic_config())
    before = script.get_revision("0004").down_revision
    assert isinstance(before, str)
    migrate(database, before)
    bodies = [killmail(kid) for kid in (131_000_001, 131_000_002, 131_000_003)]
    times = ["2026-10-01T00:00:00Z", "2026-10-20T08:30:00Z", "2026-10-05T00:00:00Z"]
    for body, when in zip(bodies, times, strict=True):
        body["killmail_time"] = when
    characters = table_of(Character)
    with database.engine.begin() as conn:  # the schema before 0004: Core rows, no new column
        for cid in (ONE_DAY, NONE):
            conn.execute(
                insert(characters).values(
                    character_id=cid,
                    name="pilot",
                    owner_hash="o",
                    scopes=KILLMAIL_SCOPE,
                    token_version=0,
                    status="active",
                    created_at=T0,
                    updated_at=T0,
                )
            )
    with database.session() as s:
        save_killmails(s, [parse_killmail(b) for b in bodies])
        s.execute(
            insert(table_of(CharacterKillmail)),
            [
                {"character_id": ONE_DAY, "killmail_id": kid, "seen_at": T0}
                for kid in (131_000_001, 131_000_002, 131_000_003)
            ],
        )
    migrate(database, "0004")
    assert newest_of(database, ONE_DAY) == datetime(2026, 10, 20, 8, 30, tzinfo=UTC)
    assert newest_of(database, NONE) is None
