"""Killmail bodies at the edges of what ESI sends, built for the tests."""

from __future__ import annotations

import random
from typing import Any

BIG = 2**31 + 12345  # ids above 2^31 exist (characters created since 2016, item ids)


def attacker(
    rng: random.Random, *, final_blow: bool = False, npc: str | None = None
) -> dict[str, Any]:
    a: dict[str, Any] = {
        "damage_done": rng.randint(0, 50_000),
        "final_blow": final_blow,
        "security_status": rng.choice([5, -10, 0, 4.9, -1.8, 0.123456789]),
    }
    if npc == "faction":
        a["faction_id"] = 500010
        a["ship_type_id"] = 3740
    elif npc == "corporation":
        a["corporation_id"] = 1000125
    else:
        a["character_id"] = BIG + rng.randint(0, 10**6)
        a["corporation_id"] = 98_000_000 + rng.randint(0, 9999)
        if rng.random() < 0.5:
            a["alliance_id"] = 99_000_000 + rng.randint(0, 9999)
        if rng.random() < 0.9:
            a["ship_type_id"] = rng.randint(500, 80_000)
            a["weapon_type_id"] = rng.randint(500, 80_000)
    return {k: a[k] for k in sorted(a)}


def item(rng: random.Random, *, children: int = 0) -> dict[str, Any]:
    it: dict[str, Any] = {
        "flag": rng.choice([5, 11, 27, 87, 90, 158]),
        "item_type_id": rng.randint(100, 90_000),
        "singleton": rng.choice([0, 0, 1, 2]),
    }
    it["quantity_destroyed" if rng.random() < 0.5 else "quantity_dropped"] = rng.randint(1, 10**6)
    if children:
        it["items"] = [item(rng) for _ in range(children)]
    return {k: it[k] for k in sorted(it)}


def killmail(
    killmail_id: int,
    *,
    seed: int = 0,
    attackers: int = 10,
    items: int = 25,
    structure: bool = False,
    npc_only: bool = False,
    war: bool = False,
) -> dict[str, Any]:
    rng = random.Random(seed * 1_000_003 + killmail_id)
    atk = [
        attacker(rng, npc=rng.choice(["faction", "corporation"]) if npc_only else None)
        for _ in range(attackers)
    ]
    atk[rng.randrange(len(atk))]["final_blow"] = True
    victim: dict[str, Any] = {
        "corporation_id": 98_000_001,
        "damage_taken": rng.randint(1, 10**7),
        "ship_type_id": 35832 if structure else rng.randint(500, 80_000),
        "items": [item(rng, children=3 if i % 10 == 0 else 0) for i in range(items)],
        "position": {
            "x": rng.uniform(-1e12, 1e12),
            "y": float(rng.randint(-(10**9), 10**9)),
            "z": -4364176704036,
        },
    }
    if not structure:
        victim["character_id"] = BIG + killmail_id % 1000
        victim["alliance_id"] = 99_005_678
    body: dict[str, Any] = {
        "attackers": atk,
        "killmail_id": killmail_id,
        "killmail_time": f"2026-{1 + killmail_id % 12:02d}-{1 + killmail_id % 28:02d}T12:34:56Z",
        "solar_system_id": 30_000_142,
        "victim": {k: victim[k] for k in sorted(victim)},
    }
    if war:
        body["war_id"] = 498 + killmail_id % 7
        body["moon_id"] = 40_009_082
    return {k: body[k] for k in sorted(body)}
