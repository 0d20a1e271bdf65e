"""Named scenarios keep their promises; scenario files load or fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from killsim import ESI_BUCKETS, FaultPlan, Scenario, SystemClock, World
from killsim.errors import ScenarioError, ScenarioFileError


def test_named_scenarios_and_their_numbers() -> None:
    assert set(Scenario.names()) == {
        "smoke",
        "fleet",
        "incremental",
        "chaos",
        "ratelimit",
        "huge",
        "corporation",
        "market",
    }
    smoke = Scenario.named("smoke")
    assert 3 <= smoke.characters <= 5 and smoke.killmails == 100 and smoke.page_size == 50
    assert smoke.buckets == ESI_BUCKETS and smoke.faults == FaultPlan()
    assert Scenario.named("incremental").list_cache_s < 10
    ratelimit = Scenario.named("ratelimit")
    assert ratelimit.buckets["killmail"][0] < 100 and ratelimit.error_limit < 100
    chaos = Scenario.named("chaos").faults
    assert chaos.server_error_rate and chaos.stall_rate and chaos.malformed_rate
    assert chaos.truncated_rate and chaos.jitter_ms and chaos.downtime_s
    assert Scenario.named("huge").huge_attackers == 3800
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        Scenario.named("nope")


def test_fleet_workload() -> None:
    fleet = Scenario.named("fleet")
    assert fleet.page_size != 50 and fleet.faults == FaultPlan()
    assert fleet.buckets["killmail"][1] < 900  # compressed windows
    summary = World(fleet, SystemClock()).summary()
    assert summary.characters >= 40 and summary.listed_killmails >= 4000
    assert 0.35 <= summary.shared_killmails / summary.listed_killmails <= 0.45
    assert summary.old_killmails == fleet.old_killmails
    assert summary.list_pages > summary.characters  # more than one page each
    assert 10 <= summary.min_sync_time_s <= 60  # "tens of seconds" from one IP


def test_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        """
base = "smoke"
seed = 7
characters = 6
page_size = 20
client_kind = "pkce"

[buckets]
char-killmail = "30/10s"
killmail = [600, 2]

[faults]
server_error_rate = { body = 0.05 }
latency_ms = 10
downtime_s = [5, 8]
""",
        encoding="utf-8",
    )
    scenario = Scenario.from_file(path)
    assert (scenario.name, scenario.seed, scenario.characters) == ("smoke", 7, 6)
    assert scenario.buckets == {"char-killmail": (30, 10), "killmail": (600, 2)}
    assert scenario.faults.server_error_rate == {"body": 0.05}
    assert scenario.faults.downtime_s == (5.0, 8.0)
    assert scenario.limit_header("char-killmail") == "30/10s"
    assert Scenario.load(str(path), seed=3).seed == 3
    assert Scenario.load("chaos", seed=3) == Scenario.named("chaos", seed=3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1", "unknown key 'colour'"),
        ("characters = 'many'", "characters: expected int, got str"),
        ("characters = 0", "characters: must be at least 1"),
        ("shared_fraction = 2.0", "shared_fraction: a probability between 0 and 1"),
        ("[buckets]\nkillmail = '3600 per 15 minutes'", "not a rate limit like '3600/15m'"),
        ("[faults]\nserver_error_rate = { lists = 0.1 }", "faults: unknown route 'lists'"),
        ("[faults]\ndowntime_s = [9, 3]", "faults.downtime_s"),
        ("[faults]\nsparks = 1", "unknown key 'faults.sparks'"),
        ("base = 'nope'", "unknown scenario 'nope'"),
        ("characters = [", "not valid TOML"),
    ],
)
def test_bad_scenario_files_fail_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioFileError) as caught:
        Scenario.from_file(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioFileError, match="not found"):
        Scenario.from_file(tmp_path / "absent.toml")
