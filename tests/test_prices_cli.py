"""`prices import`, `values`, `export --values` and valued `killmail.saved` events through
the real entry point, against the simulator (market scenario) over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from killcli.db import Database
from killcli.db.models import Event, table_of
from killcli.esi import EsiClient
from killcli.universe import fetch_types
from killcli.valuation import METHOD, price_date
from killsim.market import Market, write_history_archives
from tests.conftest import CliResult, DbTarget, sim_environ

Cli = Callable[..., CliResult]
VALUE_KEYS = {
    "total",
    "destroyed",
    "dropped",
    "fitted",
    "ship",
    "price_date",
    "method",
    "unpriced_type_ids",
}


@pytest.fixture
def market(
    start_sim: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    db_target: DbTarget,
    cli: Cli,
) -> Any:
    """The market scenario, killsync pointed at it, and archives of its history."""
    sim = start_sim("market", seed=9, characters=2, killmails=30)
    for key, value in sim_environ(sim, tmp_path / "home", db_target.url).items():
        monkeypatch.setenv(key, value)
    assert cli("db", "upgrade").exit_code == 0
    times = [sim.world.record(k).killmail_time for k in sim.world.killmails]
    first, last = price_date(min(times)) - timedelta(days=40), price_date(max(times))
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    write_history_archives(
        tmp_path / "history", Market(sim.world.item_types()), days, compress_level=1
    )
    return sim


def test_import_prices_value_and_export_with_values(
    market: Any, cli: Cli, tmp_path: Path, db_target: DbTarget
) -> None:
    bodies = [market.world.body(k) for k in sorted(market.world.killmails)]
    dump = tmp_path / "bodies.jsonl"
    dump.write_text("".join(json.dumps(b) + "\n" for b in bodies[:-1]), encoding="utf-8")
    assert cli("import", str(dump)).exit_code == 0  # no prices yet: no values
    imported = cli("prices", "import", str(tmp_path / "history"), "--no-progress")
    assert imported.exit_code == 0, imported.stderr
    assert "rows/s" in imported.stderr  # and the new prices valued what they could
    assert f"valued {len(bodies) - 1} killmails" in imported.stderr
    valued = cli("values", "--json", "--no-progress")
    assert valued.exit_code == 0, valued.stderr
    assert json.loads(valued.stdout)["data"]["valued"] == 0  # nothing left to value
    # with its prices and types stored, the last killmail is valued as it is imported
    db = Database(db_target.url)
    try:
        with EsiClient(market.esi_url, user_agent="killsync-tests") as esi:
            fetch_types(db, esi, [t.type_id for t in market.world.item_types()])
    finally:
        db.close()
    (tmp_path / "last.jsonl").write_text(json.dumps(bodies[-1]) + "\n", encoding="utf-8")
    assert cli("import", str(tmp_path / "last.jsonl")).exit_code == 0
    out = tmp_path / "valued.jsonl"
    assert cli("export", "--values", "--output", str(out)).exit_code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["killmail"] for r in records] == bodies  # the bodies exactly, in id order
    assert all(set(r) == {"killmail", "value"} for r in records)
    for record in records:
        value = record["value"]
        assert set(value) == VALUE_KEYS and value["method"].startswith(METHOD)
        assert float(value["total"]) == pytest.approx(
            float(value["destroyed"]) + float(value["dropped"])
        )
    # the value given at import is the one `killsync values` computes
    assert cli("values", "--recompute", "--no-progress").exit_code == 0
    again = tmp_path / "again.jsonl"
    assert cli("export", "--values", "--output", str(again)).exit_code == 0
    assert again.read_text(encoding="utf-8").splitlines() == lines
    # each line is the plain export's body, byte for byte, inside the record
    plain = tmp_path / "plain.jsonl"
    assert cli("export", "--output", str(plain)).exit_code == 0
    for line, body_line in zip(lines, plain.read_text(encoding="utf-8").splitlines(), strict=True):
        assert line.startswith('{"killmail":' + body_line + ',"value":')


def test_a_synced_killmail_event_carries_its_value(
    market: Any, cli: Cli, tmp_path: Path, db_target: DbTarget
) -> None:
    assert cli("prices", "import", str(tmp_path / "history"), "--no-progress").exit_code == 0
    db = Database(db_target.url)
    try:
        with EsiClient(market.esi_url, user_agent="killsync-tests") as esi:
            fetch_types(db, esi, [t.type_id for t in market.world.item_types()])
        character_id = next(iter(market.world.ground_truth()))
        token = market.issue_refresh_token(character_id)
        assert cli("users", "add", "--refresh-token", "-", stdin=token).exit_code == 0
        synced = cli("sync-user", str(character_id), "--no-progress")
        assert synced.exit_code == 0, synced.stderr
        with db.session() as session:
            payloads = list(session.scalars(select(table_of(Event).c.payload)))
    finally:
        db.close()
    assert payloads
    for payload in payloads:
        assert set(payload["value"]) == VALUE_KEYS
        assert payload["value"]["price_date"] == str(
            price_date(market.world.record(payload["killmail_id"]).killmail_time)
        )


def test_bad_price_files_are_reported_and_the_rest_imported(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILLSYNC_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "evil\x1b[2J.csv").write_text("not,a,price,file\n", encoding="utf-8")
    (folder / "good.csv").write_text(
        "average,date,highest,lowest,order_count,volume,http_last_modified,region_id,type_id\n"
        "1.5,2026-01-01,2,1,3,4,2026-01-02T11:05:00Z,10000002,34\n",
        encoding="utf-8",
    )
    result = cli("prices", "import", str(folder), "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)["data"]
    assert (data["files"], data["failed_files"], data["rows"]) == (1, 1, 1)
    assert "\x1b" not in result.stderr and "no column region_id" in result.stderr
