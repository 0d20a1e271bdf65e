"""ESI body -> rows -> body must be the identity, for sample (built, real) and extreme killmails."""

from __future__ import annotations

import json
from typing import Any

import pytest

from killcli.killmail import (
    BadJson,
    KillmailError,
    build_killmail,
    canonical_json,
    loads_body,
    parse_killmail,
)
from tests.factories import killmail
from tests.refdata import killmail_samples

SAMPLES = killmail_samples()


def roundtrip(body: dict[str, Any]) -> dict[str, Any]:
    rows = parse_killmail(body)
    return build_killmail(rows.killmail, rows.attackers, rows.items)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_samples_round_trip_to_the_same_text(name: str) -> None:
    raw = SAMPLES[name]
    again = json.dumps(roundtrip(json.loads(raw)), indent=2, ensure_ascii=False)
    assert again == raw.rstrip("\n"), name


@pytest.mark.parametrize(
    "options",
    [
        {"attackers": 3800, "items": 0},
        {"structure": True, "war": True},
        {"npc_only": True, "attackers": 4},
        {"attackers": 1, "items": 120},
    ],
)
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


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("killmail_id"), "killmail_id: missing"),
        (lambda b: b.update(killmail_time="yesterday"), "killmail_time: not a date-time"),
        (lambda b: b["attackers"][0].update(final_blow="yes"), "attackers[0].final_blow"),
        (lambda b: b["victim"].update(ship_type_id=2**64), "does not fit in 64 bits"),
        (lambda b: b["victim"]["items"][0].update(flag=True), "victim.items[0].flag"),
        (lambda b: b.update(attackers={}), "attackers: expected a list"),
    ],
)
def test_invalid_bodies_name_the_field(mutate: Any, message: str) -> None:
    body = killmail(8, items=2)
    mutate(body)
    with pytest.raises(KillmailError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_killmail(body)


def test_integral_floats_are_written_like_esi() -> None:
    body = killmail(9)
    body["attackers"][0]["security_status"] = 5.0
    assert '"security_status":5,' in canonical_json(roundtrip(body))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ('{"killmail_id": 1' + "0" * 5000 + "}", "integer too large"),
        (b'{"a": "\xff"}', "not UTF-8"),
        ('{"a": 1,', "Expecting property name"),
    ],
)
def test_strict_json_rejects_hostile_text(text: str | bytes, message: str) -> None:
    with pytest.raises(BadJson, match=message):
        loads_body(text)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b["attackers"][0].update(security_status=float("nan")), "not a finite number"),
        (lambda b: b["attackers"][0].update(security_status=1e999), "inf is not a finite number"),
        (lambda b: b["victim"]["position"].update(x=10**400), "is not a finite number"),
        (lambda b: b.update(killmail_time="0001-01-01T00:00:00+05:00"), "out of range in UTC"),
        (lambda b: b.update(killmail_time="9999-12-31T23:00:00-05:00"), "out of range in UTC"),
        (lambda b: b.update(future=_nested(64)), None),
        (lambda b: b.update(future=_nested(65)), "future: nested deeper than 64 levels"),
        (lambda b: b["attackers"][2].update(drones=[2**64]), "attackers[2].drones: an integer"),
        (lambda b: b["victim"].update(mood=float("inf")), "victim.mood: inf is not a finite"),
    ],
)
def test_values_the_database_or_json_cannot_hold_are_rejected(
    mutate: Any, message: str | None
) -> None:
    body = killmail(10, items=2)
    mutate(body)
    if message is None:
        assert roundtrip(body) == body
        return
    with pytest.raises(KillmailError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_killmail(body)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_killmail_hash_must_be_hexadecimal() -> None:
    assert parse_killmail(killmail(11), killmail_hash="0f" * 20).killmail["killmail_hash"]
    for bad in ("x" * 40, "a" * 65, "ab\x00cd", ""):
        with pytest.raises(KillmailError, match="killmail_hash"):
            parse_killmail(killmail(11), killmail_hash=bad)


def test_times_before_year_1000_keep_four_digits() -> None:
    body = killmail(12)
    body["killmail_time"] = "0999-05-06T07:08:09Z"
    assert roundtrip(body)["killmail_time"] == "0999-05-06T07:08:09Z"
    body["killmail_time"] = "2026-05-06T07:08:09.250000Z"
    assert roundtrip(body)["killmail_time"] == "2026-05-06T07:08:09.250000Z"
