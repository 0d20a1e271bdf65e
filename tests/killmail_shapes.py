"""Killmail bodies built for the tests, one per feature that real ESI bodies are known to have.

The shared folder's ``esi/killmails/`` holds five real ``GET /killmails/{id}/{hash}`` bodies,
and its README lists what each exercises; it also says not to copy them into the project.
These are not copies: every body here is written from the killmail schema and that feature
list, with ids and numbers drawn from a fixed seed (one per shape), so they are the same on
every run. The tests that round-trip bodies use these always, and the real bodies too where
the shared folder is present (``tests/refdata.py``, :func:`~tests.refdata.killmail_samples`).

Each body is what ESI would send: keys in alphabetical order at every level, integral
floats written as integers (``0``, not ``0.0``), attackers by damage done, highest first.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from killcli.killmail import esi_number

Body = dict[str, Any]

CONTAINER_FLAG = 90  # the flag of the container (and of the items it holds)
CARGO_FLAG = 5
HIGH_SLOTS, MID_SLOTS, LOW_SLOTS, RIG_SLOTS = range(27, 35), range(19, 27), range(11, 19), (92, 93)
DRONE_BAY_FLAG = 87
#: Flags only a structure has: service slots (164-171) and the fuel bay (172).
STRUCTURE_FLAGS = (164, 165, 166, 172)
STRUCTURE_TYPE_ID = 35832  # a citadel: the victim of a structure kill


@dataclass(frozen=True)
class Shape:
    """One built body: its name (``built/NAME`` in test ids) and what it exercises."""

    name: str
    exercises: str
    build: Callable[[], Body]


class _Maker:
    """Ids and amounts in the ranges ESI uses, from one seeded random source."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def character_id(self) -> int:
        return self.rng.randint(2_112_000_000, 2_124_000_000)  # above 2**31, as recent ones

    def corporation_id(self) -> int:
        return self.rng.randint(98_000_000, 98_800_000)

    def alliance_id(self) -> int:
        return self.rng.randint(99_000_000, 99_013_000)

    def npc_corporation_id(self) -> int:
        return self.rng.randint(1_000_002, 1_000_300)

    def faction_id(self) -> int:
        return self.rng.randint(500_001, 500_026)

    def type_id(self) -> int:
        return self.rng.randint(500, 89_000)

    def solar_system_id(self) -> int:
        return self.rng.randint(30_000_001, 30_005_000)

    def security_status(self) -> float:
        return self.rng.choice((round(self.rng.uniform(-10, 5), 1), self.rng.uniform(-10, 5)))

    def position(self, *, integral: bool = False) -> dict[str, float]:
        coords = [self.rng.uniform(-2e12, 2e12) for _ in "xyz"]
        if integral:  # ESI writes whole-number coordinates as integers
            coords = [float(round(c)) for c in coords]
        return dict(zip("xyz", coords, strict=True))

    def pilot(self, *, faction: bool = False) -> Body:
        """A player's ids (``character_id``, ``corporation_id``, maybe ``alliance_id``)."""
        ids: Body = {"character_id": self.character_id(), "corporation_id": self.corporation_id()}
        if self.rng.random() < 0.6:
            ids["alliance_id"] = self.alliance_id()
        if faction:  # a militia pilot
            ids["faction_id"] = self.faction_id()
        return ids

    def player(self, damage: int, *, faction: bool = False, ship: bool = True) -> Body:
        row = {
            **self.pilot(faction=faction),
            "damage_done": damage,
            "final_blow": False,
            "security_status": self.security_status(),
            "weapon_type_id": self.type_id(),
        }
        if ship:
            row["ship_type_id"] = self.type_id()
        return row

    def npc_of_faction(self, damage: int) -> Body:
        """An NPC known only by its faction: ``faction_id`` and ``ship_type_id``."""
        return {
            "damage_done": damage,
            "faction_id": self.faction_id(),
            "final_blow": False,
            "security_status": 0,
            "ship_type_id": self.type_id(),
        }

    def npc_of_corporation(self, damage: int) -> Body:
        """An NPC known only by its corporation: ``corporation_id`` and ``ship_type_id``."""
        return {
            "corporation_id": self.npc_corporation_id(),
            "damage_done": damage,
            "final_blow": False,
            "security_status": 0,
            "ship_type_id": self.type_id(),
        }

    def item(
        self,
        flag: int,
        *,
        type_id: int | None = None,
        quantity: int | None = None,
        dropped: bool | None = None,
        singleton: int = 0,
    ) -> Body:
        dropped = self.rng.random() < 0.45 if dropped is None else dropped
        amount = quantity or self.rng.choice((1, self.rng.randint(2, 500)))
        return {
            "flag": flag,
            "item_type_id": type_id or self.type_id(),
            "quantity_dropped" if dropped else "quantity_destroyed": amount,
            "singleton": singleton,
        }

    def fitting(self) -> list[Body]:
        """Modules in high, mid, low and rig slots, one of each slot's flag at most."""
        return [
            self.item(flag, quantity=1)
            for slots, used in ((HIGH_SLOTS, 4), (MID_SLOTS, 3), (LOW_SLOTS, 3), (RIG_SLOTS, 2))
            for flag in self.rng.sample(list(slots), used)
        ]


def _final(attackers: list[Body], index: int) -> list[Body]:
    """``attackers`` by damage done, highest first, with ``index``'s final blow."""
    attackers[index]["final_blow"] = True
    return sorted(attackers, key=lambda row: -int(row["damage_done"]))


def _body(
    maker: _Maker,
    killmail_id: int,
    when: str,
    victim: Body,
    attackers: list[Body],
    **top: int,
) -> Body:
    victim = {**victim, "damage_taken": sum(int(a["damage_done"]) for a in attackers)}
    body: Body = esi_form(
        {
            "attackers": attackers,
            "killmail_id": killmail_id,
            "killmail_time": when,
            "solar_system_id": maker.solar_system_id(),
            "victim": victim,
            **top,
        }
    )
    return body


def esi_form(value: Any) -> Any:
    """``value`` as ESI writes it: sorted keys at every level, integral floats as ints."""
    if isinstance(value, dict):
        return {key: esi_form(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [esi_form(child) for child in value]
    if isinstance(value, float):
        return esi_number(value)
    return value


# -- the shapes ---------------------------------------------------------------------------


def nested_items() -> Body:
    """A container (flag 90) holding ten items, and (type, flag) pairs on several rows."""
    maker = _Maker(1)
    rng = maker.rng
    contents = [maker.item(CONTAINER_FLAG) for _ in range(8)]
    twin = maker.type_id()  # the same type in the container twice: one dropped, one destroyed
    contents += [
        maker.item(CONTAINER_FLAG, type_id=twin, dropped=True),
        maker.item(CONTAINER_FLAG, type_id=twin, dropped=False),
    ]
    container = maker.item(CONTAINER_FLAG, quantity=1, dropped=False, singleton=0)
    container["items"] = contents
    ammo = maker.type_id()  # the same charge in the cargo hold on three rows
    cargo = [
        maker.item(CARGO_FLAG, type_id=ammo, quantity=rng.randint(100, 5_000), dropped=d)
        for d in (True, False, False)
    ]
    items = [*maker.fitting(), container, *cargo, maker.item(CARGO_FLAG, singleton=2)]
    attackers = [
        maker.player(rng.randint(100, 9_000), faction=i < 2, ship=i != 3) for i in range(6)
    ]
    victim = {**maker.pilot(), "items": items, "position": maker.position()}
    victim["ship_type_id"] = maker.type_id()
    return _body(maker, 140_000_001, "2026-02-03T04:05:06Z", victim, _final(attackers, 1))


def npc_faction_only_attacker() -> Body:
    """NPC attackers known only by ``faction_id`` and ``ship_type_id``; one lands the blow."""
    maker = _Maker(2)
    rng = maker.rng
    attackers = [maker.npc_of_faction(rng.randint(50, 3_000)) for _ in range(5)]
    attackers.append(maker.player(rng.randint(50, 3_000)))
    items = [*maker.fitting(), maker.item(DRONE_BAY_FLAG, quantity=rng.randint(2, 5))]
    victim = {
        **maker.pilot(),
        "items": items,
        "position": maker.position(),
        "ship_type_id": maker.type_id(),
    }
    return _body(maker, 140_000_002, "2026-03-14T15:09:26Z", victim, _final(attackers, 0))


def structure_war_500_attackers() -> Body:
    """A structure (no ``character_id``) killed in a war by 500 attackers; whole-number position."""
    maker = _Maker(3)
    rng = maker.rng
    attackers = [
        maker.player(
            0 if rng.random() < 0.02 else rng.randint(1, 400_000),
            faction=rng.random() < 0.05,
            ship=rng.random() > 0.04,
        )
        for _ in range(500)
    ]
    victim = {
        "alliance_id": maker.alliance_id(),
        "corporation_id": maker.corporation_id(),
        "items": [maker.item(rng.choice(STRUCTURE_FLAGS)) for _ in range(6)],
        "position": maker.position(integral=True),
        "ship_type_id": STRUCTURE_TYPE_ID,
    }
    return _body(
        maker,
        140_000_003,
        "2026-04-01T23:59:59Z",
        victim,
        _final(attackers, rng.randrange(500)),
        war_id=rng.randint(700_000, 760_000),
    )


def structure_no_moon() -> Body:
    """A structure with only structure flags on its items, and no ``moon_id`` on the kill."""
    maker = _Maker(4)
    rng = maker.rng
    attackers = [maker.player(rng.randint(1_000, 60_000)) for _ in range(12)]
    items = [maker.item(flag, quantity=1) for flag in STRUCTURE_FLAGS[:3]]
    items += [maker.item(STRUCTURE_FLAGS[3], quantity=rng.randint(10, 4_000)) for _ in range(3)]
    victim = {
        "corporation_id": maker.corporation_id(),
        "items": items,
        "position": maker.position(),
        "ship_type_id": maker.type_id(),
    }
    return _body(maker, 140_000_004, "2026-05-06T07:08:09Z", victim, _final(attackers, 2))


def npc_corp_only_attacker() -> Body:
    """An NPC known only by ``corporation_id`` that did no damage; repeated (type, flag) rows."""
    maker = _Maker(5)
    rng = maker.rng
    attackers = [maker.player(rng.randint(300, 2_000)), maker.npc_of_corporation(0)]
    module, charge = maker.type_id(), maker.type_id()
    items = [
        maker.item(LOW_SLOTS[0], type_id=module, quantity=1, dropped=True),
        maker.item(LOW_SLOTS[1], type_id=module, quantity=1, dropped=False),
        maker.item(CARGO_FLAG, type_id=charge, quantity=40, dropped=True),
        maker.item(CARGO_FLAG, type_id=charge, quantity=25, dropped=False),
        maker.item(HIGH_SLOTS[0], quantity=1),
    ]
    victim = {
        **maker.pilot(),
        "items": items,
        "position": maker.position(),
        "ship_type_id": maker.type_id(),
    }
    return _body(maker, 140_000_005, "2026-06-07T08:09:10Z", victim, _final(attackers, 0))


SHAPES: tuple[Shape, ...] = (
    Shape("nested_items", "container (flag 90) with 10 items; repeated rows", nested_items),
    Shape("npc_faction_only_attacker", "NPC: faction_id + ship_type_id", npc_faction_only_attacker),
    Shape(
        "structure_war_500_attackers",
        "structure victim, war_id, 500 attackers, integral position",
        structure_war_500_attackers,
    ),
    Shape("structure_no_moon", "structure-only item flags, no moon_id", structure_no_moon),
    Shape(
        "npc_corp_only_attacker",
        "NPC: corporation_id only, damage_done 0; repeated rows",
        npc_corp_only_attacker,
    ),
)


def built_killmails() -> dict[str, Body]:
    """Every built body by shape name (a fresh copy on each call)."""
    return {shape.name: shape.build() for shape in SHAPES}


def as_text(body: Body) -> str:
    """The body as a sample file holds it: two-space indented JSON, UTF-8, final newline."""
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
