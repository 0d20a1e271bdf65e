"""`stats`: kills and losses per day of the last 30 days and the top ships, equal to a
direct count of the stored killmails (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from killcli.db import Database
from killcli.db.models import Character, Corporation
from killcli.db.store import save_killmails
from killcli.killmail import format_time, parse_killmail
from killcli.stats import ZERO, activity
from killcli.valuation import KillmailValuation
from killcli.values import save_values
from tests.conftest import CliResult, DbTarget
from tests.factories import killmail

ME = 2_112_000_555
MY_CORP = 98_000_555
SHIPS = (587, 670, 17738, 35832)


def _bodies(now: datetime) -> list[dict[str, Any]]:
    bodies = []
    for k in range(1, 161):
        body = killmail(k, attackers=2, items=0)
        # Spread over 40 days, several a day, some exactly on midnight (UTC).
        when = now - timedelta(hours=6 * k + (k % 5))
        if k % 17 == 0:
            when = when.replace(hour=0, minute=0, second=0, microsecond=0)
        body["killmail_time"] = format_time(when)
        body["victim"]["ship_type_id"] = SHIPS[k % len(SHIPS)]
        if k % 3 == 0:
            body["victim"]["character_id"] = ME  # a loss of a tracked character
        elif k % 7 == 0:
            body["victim"].pop("character_id", None)
            body["victim"]["corporation_id"] = MY_CORP  # a loss of a tracked corporation
        bodies.append(body)
    return bodies


def _store(db: Database, now: datetime) -> list[dict[str, Any]]:
    bodies = _bodies(now)
    with db.session() as session:
        session.add(Character(character_id=ME, name="Me", owner_hash="h"))
        session.add(Corporation(corporation_id=MY_CORP, name="Mine"))
        session.flush()
        save_killmails(
            session, [parse_killmail(b, killmail_hash=f"{i:040x}") for i, b in enumerate(bodies)]
        )
    return bodies


def _direct_count(
    bodies: list[dict[str, Any]], now: datetime
) -> tuple[Counter[tuple[str, str]], Counter[tuple[int, str]]]:
    first = (now - timedelta(days=29)).replace(hour=0, minute=0, second=0, microsecond=0)
    per_day: Counter[tuple[str, str]] = Counter()
    per_ship: Counter[tuple[int, str]] = Counter()
    for b in bodies:
        when = datetime.fromisoformat(b["killmail_time"])
        if when < first:
            continue
        v = b["victim"]
        side = (
            "losses" if v.get("character_id") == ME or v["corporation_id"] == MY_CORP else "kills"
        )
        per_day[(when.strftime("%Y-%m-%d"), side)] += 1
        per_ship[(v["ship_type_id"], side)] += 1
    return per_day, per_ship


def test_the_series_equals_a_direct_count(db: Database) -> None:
    now = datetime.now(UTC)
    bodies = _store(db, now)
    per_day, per_ship = _direct_count(bodies, now)
    result = activity(db, now)
    assert len(result.daily) == 30
    assert result.daily[-1].day == now.strftime("%Y-%m-%d")
    for d in result.daily:
        assert (d.kills, d.losses) == (per_day[(d.day, "kills")], per_day[(d.day, "losses")])
    assert sum(d.kills + d.losses for d in result.daily) == sum(per_day.values())
    assert {d.day for d in result.daily} >= {day for day, _ in per_day}
    assert min(d.losses for d in result.daily) >= 0 and max(d.losses for d in result.daily) > 0
    ships = {s.ship_type_id: (s.kills, s.losses) for s in result.top_ships}
    assert ships == {
        ship: (per_ship[(ship, "kills")], per_ship[(ship, "losses")])
        for ship in {ship for ship, _ in per_ship}
    }
    totals = [k + lo for k, lo in ships.values()]
    assert [s.kills + s.losses for s in result.top_ships] == sorted(totals, reverse=True)


def test_stats_json_carries_the_series_and_the_chart_shows_it(
    db: Database, db_target: DbTarget, cli: Callable[..., CliResult]
) -> None:
    now = datetime.now(UTC)
    bodies = _store(db, now)
    per_day, _ = _direct_count(bodies, now)
    url = ("--database-url", db_target.url)
    result = cli(*url, "stats", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert data["killmails_total"] == len(bodies)  # the existing keys stay
    daily = {d["day"]: (d["kills"], d["losses"]) for d in data["activity"]["daily"]}
    assert daily == {day: (per_day[(day, "kills")], per_day[(day, "losses")]) for day in daily}
    shown = cli(*url, "stats")
    assert shown.exit_code == 0, shown.stderr
    assert "kills and losses per day, last 30 days" in shown.stdout
    assert "█" in shown.stdout and now.strftime("%Y-%m-%d") in shown.stdout


def test_isk_destroyed_and_lost_per_day_are_the_sums_of_the_stored_values(
    db: Database, db_target: DbTarget, cli: Callable[..., CliResult]
) -> None:
    now = datetime.now(UTC)
    bodies = _store(db, now)
    first = (now - timedelta(days=29)).replace(hour=0, minute=0, second=0, microsecond=0)
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    values = []
    for i, b in enumerate(bodies):
        if i % 3 == 2:
            continue  # a third is not valued
        total = Decimal(1_000_000 * (i + 1)) + Decimal("0.25")
        values.append(
            KillmailValuation(
                b["killmail_id"], total, total, ZERO, total, ZERO, date(2026, 1, 1), "zkb-1", ()
            )
        )
        when = datetime.fromisoformat(b["killmail_time"])
        if when >= first:
            v = b["victim"]
            lost = v.get("character_id") == ME or v["corporation_id"] == MY_CORP
            expected[(when.strftime("%Y-%m-%d"), "lost" if lost else "destroyed")] += total
    with db.session() as session:
        save_values(session, values)
    result = activity(db, now)
    for d in result.daily:
        assert Decimal(d.isk_destroyed) == expected[(d.day, "destroyed")]
        assert Decimal(d.isk_lost) == expected[(d.day, "lost")]
    assert Decimal(result.isk_destroyed) == sum(
        (v for (_, side), v in expected.items() if side == "destroyed"), ZERO
    )
    in_window = {
        b["killmail_id"] for b in bodies if datetime.fromisoformat(b["killmail_time"]) >= first
    }
    assert result.valued == sum(1 for v in values if v.killmail_id in in_window)
    shown = cli("--database-url", db_target.url, "stats")
    assert shown.exit_code == 0, shown.stderr
    assert "ISK destroyed" in shown.stdout and "valued killmails" in shown.stdout
