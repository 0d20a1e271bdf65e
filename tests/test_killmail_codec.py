"""ESI body -> rows -> body must be the identity, for real and extreme killmails."""

from __future__ import annotations

import json
from typing import Any

import pytest

from killcli.killmail import KillmailError, build_killmail, canonical_json, parse_killmail
from tests.conftest import shared_dir
from tests.factories import killmail


def roundtrip(body: dict[str, Any]) -> dict[str, Any]:
    rows = parse_killmail(body)
    return build_killmail(rows.killmail, rows.attackers, rows.items)


def test_real_samples_round_trip_to_the_same_text() -> None:
    files = sorted((shared_dir() / "esi" / "killmails").glob("*.json"))
    assert len(files) >= 5
    for path in files:
        raw = path.read_text(encoding="utf-8")
        again = json.dumps(roundtrip(json.loads(raw)), indent=2, ensure_ascii=False)
        assert again == raw.rstrip("\n"), path.name


@pytest.mark.parametrize("options", [
    {"attackers": 3800, "items": 0},
    {"structure": True, "war": True},
    {"npc_only": True, "attackers": 4},
    {"attackers": 1, "items": 120},
])
def test_generated_extremes_round_trip(options: dict[str, Any]) -> None:
    body = killmail(2**40 + 7, seed=3, **options)
    assert canonical_json(roundtrip(body)) == canonical_json(body)
    assert roundtrip(body) == body


def test_unknown_fields_are_kept() -> None:
    body = killmail(5, items=2)
    body["new_top_level"] = {"a": 1}
    body["victim"]["mood"] = "sad"
    body["attackers"][0]["drone_count"] = 3
    body["victim"]["items"][0]["mutated"] = True
    assert roundtrip(body) == body


def test_empty_items_and_absent_items_stay_distinct() -> None:
    with_empty = killmail(6, items=0)
    assert with_empty["victim"]["items"] == []
    assert roundtrip(with_empty)["victim"]["items"] == []
    without = killmail(7, items=0)
    del without["victim"]["items"]
    assert "items" not in roundtrip(without)["victim"]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b.pop("killmail_id"), "killmail_id: missing"),
    (lambda b: b.update(killmail_time="yesterday"), "killmail_time: not a date-time"),
    (lambda b: b["attackers"][0].update(final_blow="yes"), "attackers[0].final_blow"),
    (lambda b: b["victim"].update(ship_type_id=2**64), "does not fit in 64 bits"),
    (lambda b: b["victim"]["items"][0].update(flag=True), "victim.items[0].flag"),
    (lambda b: b.update(attackers={}), "attackers: expected a list"),
])
def test_invalid_bodies_name_the_field(mutate: Any, message: str) -> None:
    body = killmail(8, items=2)
    mutate(body)
    with pytest.raises(KillmailError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_killmail(body)


def test_integral_floats_are_written_like_esi() -> None:
    body = killmail(9)
    body["attackers"][0]["security_status"] = 5.0
    assert '"security_status":5,' in canonical_json(roundtrip(body))
