"""The built sample bodies have the features they stand for, and are the same on every run.

They replace the real bodies of the shared folder in every clone, so a change to
``tests/killmail_shapes.py`` that lost a feature would silently weaken the round-trip tests.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tests.killmail_shapes import (
    CONTAINER_FLAG,
    SHAPES,
    STRUCTURE_FLAGS,
    Body,
    as_text,
    built_killmails,
    esi_form,
)
from tests.refdata import shared_killmails

BUILT = built_killmails()
IDS = frozenset({"character_id", "corporation_id", "alliance_id", "faction_id"})


def _repeated_rows(items: list[Body]) -> bool:
    pairs = Counter((item["item_type_id"], item["flag"]) for item in items)
    return max(pairs.values()) > 1


def _npcs(body: Body, ids: set[str]) -> list[Body]:
    """The attackers whose only ids are ``ids``, with a ship and no weapon."""
    return [
        a
        for a in body["attackers"]
        if IDS & set(a) == ids and "ship_type_id" in a and "weapon_type_id" not in a
    ]


def test_a_container_holds_ten_items_and_rows_repeat() -> None:
    items = BUILT["nested_items"]["victim"]["items"]
    containers = [item for item in items if "items" in item]
    assert [(c["flag"], len(c["items"])) for c in containers] == [(CONTAINER_FLAG, 10)]
    assert _repeated_rows(items) and _repeated_rows(containers[0]["items"])
    assert any(
        "faction_id" in a and "character_id" in a for a in BUILT["nested_items"]["attackers"]
    )


def test_an_npc_attacker_has_only_a_faction_and_a_ship() -> None:
    body = BUILT["npc_faction_only_attacker"]
    npcs = _npcs(body, {"faction_id"})
    assert npcs and any(a["final_blow"] for a in npcs)


def test_a_structure_dies_in_a_war_to_500_attackers_at_a_whole_number_position() -> None:
    body = BUILT["structure_war_500_attackers"]
    assert "character_id" not in body["victim"] and isinstance(body["war_id"], int)
    assert len(body["attackers"]) == 500
    assert sum(a["final_blow"] for a in body["attackers"]) == 1
    assert all(type(v) is int for v in body["victim"]["position"].values())


def test_a_structure_has_only_structure_flags_and_no_moon() -> None:
    body = BUILT["structure_no_moon"]
    assert "moon_id" not in body and "character_id" not in body["victim"]
    assert {item["flag"] for item in body["victim"]["items"]} <= set(STRUCTURE_FLAGS)


def test_an_npc_attacker_has_only_a_corporation_and_did_no_damage() -> None:
    body = BUILT["npc_corp_only_attacker"]
    assert [a["damage_done"] for a in _npcs(body, {"corporation_id"})] == [0]
    assert _repeated_rows(body["victim"]["items"])


def test_bodies_are_deterministic_in_esi_form_and_distinct() -> None:
    again = built_killmails()
    assert [shape.name for shape in SHAPES] == list(BUILT)
    for name, body in BUILT.items():
        assert as_text(again[name]) == as_text(body), name
        assert as_text(esi_form(body)) == as_text(body), name  # sorted keys, 0 not 0.0
        assert json.loads(as_text(body)) == body
        assert sum(a["final_blow"] for a in body["attackers"]) == 1, name
        damage = [a["damage_done"] for a in body["attackers"]]
        assert damage == sorted(damage, reverse=True), name
    assert len({body["killmail_id"] for body in BUILT.values()}) == len(BUILT)


def test_no_built_body_is_a_real_one() -> None:
    """Where the shared folder is present: built, not copied (no id or body in common)."""
    real: list[dict[str, Any]] = [json.loads(p.read_bytes()) for p in shared_killmails()]
    real_ids = {body["killmail_id"] for body in real}
    for body in BUILT.values():
        assert body["killmail_id"] not in real_ids
        assert body not in real
