"""`killsync kills` and `killsync show` against the simulator's ground truth.

The `huge` world (one structure kill with 3,800 attackers) with two ids `/universe/names`
cannot resolve is synced through the real CLI into SQLite and PostgreSQL; what `kills`
and `show` print is compared with the simulator's own bodies and names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from killcli.accounts import CORPORATION_LOGIN_SCOPES
from killcli.cli.kills import security_label
from killcli.db import Database
from killcli.db.models import MarketHistory
from killcli.events.render import isk_compact
from killcli.killmail import parse_time
from killcli.valuation import KillmailValuation
from killcli.values import save_values
from killsim.market import region_of_constellation
from tests.conftest import CliResult, DbTarget, sim_environ

Cli = Callable[..., CliResult]


@dataclass(frozen=True)
class Synced:
    sim: Any
    bodies: dict[int, dict[str, Any]]  # every killmail a complete sync stores

    def name(self, entity_id: int | None) -> str | None:
        found = None if entity_id is None else self.sim.world.name(entity_id)
        return None if found is None else found[0]


def _json(cli: Cli, *args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["data"]


@pytest.fixture
def synced(
    start_sim: Callable[..., Any],
    cli: Cli,
    db_target: DbTarget,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Synced:
    sim = start_sim("huge", unknown_name_ids=2)
    for key, value in sim_environ(sim, tmp_path / "home", db_target.url).items():
        monkeypatch.setenv(key, value)
    assert cli("db", "upgrade").exit_code == 0
    truth = sim.world.ground_truth()
    for character_id in truth:
        token = sim.issue_refresh_token(character_id)
        assert cli("users", "add", "--refresh-token", "-", stdin=token).exit_code == 0
        synced = cli("sync-user", str(character_id), "--no-progress")
        assert synced.exit_code == 0, synced.stderr
    ids = {k for listed in truth.values() for k in listed}
    return Synced(sim, {k: sim.world.body(k) for k in ids})


def _newest_first(bodies: dict[int, dict[str, Any]]) -> list[int]:
    return sorted(bodies, key=lambda k: (parse_time(bodies[k]["killmail_time"]), k), reverse=True)


def _final_blow(body: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in body["attackers"] if a["final_blow"])


def test_kills_lists_every_killmail_newest_first_with_the_simulators_names(
    synced: Synced, cli: Cli
) -> None:
    data = _json(cli, "kills", "--limit", "10000")
    assert [k["killmail_id"] for k in data["kills"]] == _newest_first(synced.bodies)
    for row in data["kills"]:
        body = synced.bodies[row["killmail_id"]]
        victim, blow = body["victim"], _final_blow(body)
        assert row["solar_system_name"] == synced.name(body["solar_system_id"])
        assert row["victim"]["character_id"] == victim.get("character_id")
        assert row["victim"]["character_name"] == synced.name(victim.get("character_id"))
        assert row["victim"]["corporation_name"] == synced.name(victim.get("corporation_id"))
        assert row["victim"]["ship_type_name"] == synced.name(victim["ship_type_id"])
        assert row["final_blow"]["character_name"] == synced.name(blow.get("character_id"))
        assert row["final_blow"]["ship_type_id"] == blow.get("ship_type_id")
        assert row["attacker_count"] == len(body["attackers"])
        assert row["side"] is None and row["value"] is None
        system = synced.sim.world.system(body["solar_system_id"])  # cached by the sync
        assert row["security_status"] == system.security_status
        assert row["region_id"] == region_of_constellation(system.constellation_id)
    assert max(k["attacker_count"] for k in data["kills"]) == 3800
    limited = _json(cli, "kills", "--limit", "5")["kills"]
    assert [k["killmail_id"] for k in limited] == _newest_first(synced.bodies)[:5]


def test_kills_of_a_character_are_its_kills_and_losses_marked(synced: Synced, cli: Cli) -> None:
    for character_id in synced.sim.world.ground_truth():
        mine = {
            k: b
            for k, b in synced.bodies.items()
            if b["victim"].get("character_id") == character_id
            or any(a.get("character_id") == character_id for a in b["attackers"])
        }
        data = _json(cli, "kills", "--character", str(character_id), "--limit", "10000")
        assert [k["killmail_id"] for k in data["kills"]] == _newest_first(mine)
        sides = {k["killmail_id"]: k["side"] for k in data["kills"]}
        assert sides == {
            k: "loss" if b["victim"].get("character_id") == character_id else "kill"
            for k, b in mine.items()
        }
        assert {"kill", "loss"} >= set(sides.values())


def test_kills_since_a_date_or_a_duration(synced: Synced, cli: Cli) -> None:
    times = {k: parse_time(b["killmail_time"]) for k, b in synced.bodies.items()}
    now = datetime.now(UTC)
    day = (now - timedelta(days=10)).strftime("%Y-%m-%d")
    for arg, cutoff in [
        ("30d", now - timedelta(days=30)),
        (day, datetime.fromisoformat(day).replace(tzinfo=UTC)),
    ]:
        data = _json(cli, "kills", "--since", arg, "--limit", "10000")
        expected = {k: b for k, b in synced.bodies.items() if times[k] >= cutoff}
        assert expected and len(expected) < len(synced.bodies)
        assert [k["killmail_id"] for k in data["kills"]] == _newest_first(expected)


def test_unknown_names_are_null_in_json_and_ids_on_the_terminal(synced: Synced, cli: Cli) -> None:
    ghosts = set(synced.sim.world.unknown_ids)
    with_ghost = {
        k: ghosts & {a.get("character_id") for a in b["attackers"]}
        for k, b in synced.bodies.items()
    }
    with_ghost = {k: found for k, found in with_ghost.items() if found}
    assert ghosts and with_ghost
    for killmail_id, found in with_ghost.items():
        names = _json(cli, "show", str(killmail_id))["names"]
        assert all(names[str(g)] is None for g in found)
        assert any(name is not None for name in names.values())
        shown = cli("show", str(killmail_id), "--attackers", "10000")
        assert shown.exit_code == 0, shown.stderr
        assert all(str(g) in shown.stdout for g in found)


def test_show_prints_the_exact_body_and_every_name(synced: Synced, cli: Cli) -> None:
    for killmail_id, body in synced.bodies.items():
        data = _json(cli, "show", str(killmail_id))
        assert data["killmail"] == body
        assert json.dumps(data["killmail"], sort_keys=True) == json.dumps(body, sort_keys=True)
        for key, name in data["names"].items():
            assert name == synced.name(int(key)), key
        assert data["value"] is None


def test_show_the_3800_attacker_kill(synced: Synced, cli: Cli) -> None:
    [(killmail_id, body)] = [
        (k, b) for k, b in synced.bodies.items() if len(b["attackers"]) == 3800
    ]
    result = cli("show", str(killmail_id), "--attackers", "5")
    assert result.exit_code == 0, result.stderr
    assert "and 3,795 more" in result.stdout
    top = sorted(body["attackers"], key=lambda a: -a["damage_done"])[:5]
    for attacker in top:
        assert f"{attacker['damage_done']:,}" in result.stdout
    default = cli("show", str(killmail_id))
    assert "and 3,790 more" in default.stdout
    assert str(synced.name(body["solar_system_id"])) in default.stdout


def test_show_nests_the_items_with_their_quantities(synced: Synced, cli: Cli) -> None:
    nested = [
        (k, b)
        for k, b in synced.bodies.items()
        if any(i.get("items") for i in b["victim"].get("items", []))
    ]
    assert nested
    killmail_id, body = nested[0]
    result = cli("show", str(killmail_id))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    container = next(i for i in body["victim"]["items"] if i.get("items"))
    child = container["items"][0]
    child_name = synced.name(child["item_type_id"]) or str(child["item_type_id"])
    row = next(line for line in lines if child_name in line and "[" in line)
    depth = len(row) - len(row.lstrip(" │├└─"))
    top_rows = [line for line in lines if line.startswith(("├── ", "└── "))]
    assert top_rows and depth > 4  # under its container, not at the top level
    if child.get("quantity_dropped"):
        assert f"dropped {child['quantity_dropped']:,}" in row


def test_show_an_unknown_killmail_is_one_line_exit_2(synced: Synced, cli: Cli) -> None:
    result = cli("show", "1")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "killsync: error: no killmail 1 in the database (see `killsync kills`)"
    ]


def test_kills_of_a_corporation_are_its_list_and_its_losses_marked(
    start_sim: Callable[..., Any],
    cli: Cli,
    db_target: DbTarget,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = start_sim("smoke", characters=2, killmails=40, corporations=1)
    for key, value in sim_environ(sim, tmp_path / "home", db_target.url).items():
        monkeypatch.setenv(key, value)
    assert cli("db", "upgrade").exit_code == 0
    [(corporation_id, corporation)] = sim.world.corporations().items()
    [director] = corporation.director_ids
    token = sim.issue_refresh_token(director, CORPORATION_LOGIN_SCOPES)
    assert cli("users", "add", "--refresh-token", "-", stdin=token).exit_code == 0
    synced = cli("sync-corporation", str(corporation_id), "--no-progress")
    assert synced.exit_code == 0, synced.stderr
    listed = sim.world.corporation_ground_truth()[corporation_id]
    bodies = {k: sim.world.body(k) for k in listed}  # the corporation sync stored its list
    data = _json(cli, "kills", "--corporation", str(corporation_id), "--limit", "10000")
    assert [k["killmail_id"] for k in data["kills"]] == _newest_first(bodies)
    sides = {k["killmail_id"]: k["side"] for k in data["kills"]}
    losses = {k for k, b in bodies.items() if b["victim"].get("corporation_id") == corporation_id}
    assert losses and len(losses) < len(bodies)
    assert sides == {k: "loss" if k in losses else "kill" for k in bodies}
    assert data["corporation_id"] == corporation_id and data["character_id"] is None


def test_kills_and_show_carry_the_stored_value(synced: Synced, cli: Cli, db: Database) -> None:
    newest = _newest_first(synced.bodies)
    valued, unvalued = newest[0], newest[1]
    value = KillmailValuation(
        valued,
        Decimal("1234567890.12"),
        Decimal("1000000000.00"),
        Decimal("234567890.12"),
        Decimal("1200000000.00"),
        Decimal("900000000.00"),
        date(2026, 11, 30),
        "zkb-1",
        (588,),
    )
    with db.session() as session:
        save_values(session, [value])
    rows = {r["killmail_id"]: r for r in _json(cli, "kills", "--limit", "2")["kills"]}
    assert rows[valued]["value"] == value.as_dict() and rows[unvalued]["value"] is None
    assert _json(cli, "show", str(valued))["value"] == value.as_dict()
    table = cli("kills", "--limit", "2")
    assert table.exit_code == 0 and "1.23b" in table.stdout
    shown = cli("show", str(valued))
    assert "1.23b ISK (destroyed 1.00b, dropped 234.57m, fitted 1.20b" in shown.stdout
    assert "1 type unpriced" in shown.stdout
    assert "not valued yet" in cli("show", str(unvalued)).stdout


@pytest.mark.parametrize(
    ("security", "label"),
    [(1.0, "1.0"), (0.46, "0.5"), (0.44, "0.4"), (0.04, "0.1"), (0.0, "0.0"), (-0.23, "-0.2")],
)
def test_security_is_shown_as_the_game_rounds_it(security: float, label: str) -> None:
    assert security_label(security) == label


def test_show_values_each_item_at_the_killmails_day(synced: Synced, cli: Cli, db: Database) -> None:
    [killmail_id] = [
        k for k in _newest_first(synced.bodies) if synced.bodies[k]["victim"].get("items")
    ][:1]
    body = synced.bodies[killmail_id]
    day = parse_time(body["killmail_time"]).date() - timedelta(days=1)
    types = {i["item_type_id"] for i in body["victim"]["items"]} | {body["victim"]["ship_type_id"]}
    with db.session() as session:  # every type at 2,000,000 ISK for the 10 days before
        for type_id in types:
            for n in range(10):
                session.add(
                    MarketHistory(
                        region_id=10_000_002,
                        type_id=type_id,
                        date=day - timedelta(days=n),
                        average=2_000_000.0,
                        highest=2_000_000.0,
                        lowest=2_000_000.0,
                        volume=1,
                        order_count=1,
                    )
                )
    assert cli("values", "--no-fetch").exit_code == 0
    shown = cli("show", str(killmail_id))
    assert shown.exit_code == 0, shown.stderr
    first = body["victim"]["items"][0]
    quantity = first.get("quantity_destroyed", 0) + first.get("quantity_dropped", 0)
    worth = Decimal(2_000_000 * quantity) if first.get("singleton") != 2 else Decimal("0.01")
    assert f"{isk_compact(worth)} ISK" in shown.stdout
