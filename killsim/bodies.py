"""Killmail bodies exactly as ESI writes them.

Details (ships, weapons, damage, items, position) come from a random source seeded
with the scenario seed and the killmail id, so a body never depends on the order in
which bodies were generated. Bytes follow ESI's encoder: compact, keys in alphabetical
order, integral floats without a fraction (``5`` not ``5.0``), non-ASCII as UTF-8 and
``<``, ``>``, ``&`` escaped as ``\\u003c`` & co (ESI is a Go service).
"""

from __future__ import annotations

import json
import random
from typing import Any

from killsim.esi_format import esi_time, go_number
from killsim.generate import seeded
from killsim.model import KillSpec, Pilot
from killsim.names import TypeInfo

_HIGH, _MID, _LOW, _RIGS = range(27, 35), range(19, 27), range(11, 19), (92, 93, 94)
_CARGO, _DRONE_BAY, _FIGHTER_BAY, _FUEL_BAY = 5, 87, 158, 133
_SHIP_HANGAR = 90
_BLUEPRINT_COPY = 2  # ``singleton`` of a blueprint copy
_STRUCTURE_FLAGS = (164, 172, 180, 186)


def encode(value: Any) -> bytes:
    """JSON bytes the way ESI (Go's encoding/json) writes them."""
    text = json.dumps(
        _esi_numbers(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    # Outside strings JSON has no <, > or &: replacing them everywhere is safe.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode("utf-8")


def _esi_numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _esi_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_esi_numbers(v) for v in value]
    if isinstance(value, float):
        return go_number(value)
    return value


class BodyMaker:
    """Turns a :class:`KillSpec` into the ESI body."""

    def __init__(
        self, seed: int, types: dict[int, TypeInfo], *, valued_items: bool = False
    ) -> None:
        self._seed = seed
        self._valued_items = valued_items
        self._by_role: dict[str, list[int]] = {}
        for info in types.values():
            self._by_role.setdefault(info.role, []).append(info.type_id)
        for ids in self._by_role.values():
            ids.sort()

    def body(self, spec: KillSpec) -> dict[str, Any]:
        """The body ESI would send for this kill."""
        rng = seeded(f"body:{self._seed}:{spec.killmail_id}")
        attackers = self._attackers(spec, rng)
        victim: dict[str, Any] = {
            **_ids(spec.victim),
            "damage_taken": sum(a["damage_done"] for a in attackers),
            "ship_type_id": spec.victim_ship_type_id,
            "position": _position(rng),
        }
        items = self._items(spec, rng)
        if items is not None:
            victim["items"] = items
        body: dict[str, Any] = {
            "attackers": attackers,
            "killmail_id": spec.killmail_id,
            "killmail_time": esi_time(spec.killmail_time),
            "solar_system_id": spec.solar_system_id,
            "victim": victim,
        }
        if spec.moon_id is not None:
            body["moon_id"] = spec.moon_id
        if spec.war_id is not None:
            body["war_id"] = spec.war_id
        return body

    # -- attackers ----------------------------------------------------------------------

    def _attackers(self, spec: KillSpec, rng: random.Random) -> list[dict[str, Any]]:
        pilots = [spec.final_blow]
        if spec.credited is not None and spec.credited is not spec.final_blow:
            pilots.append(spec.credited)
        pilots.extend(spec.others)
        scale = rng.choice((800, 5_000, 40_000, 400_000))
        rows = [self._attacker(p, index == 0, scale, rng) for index, p in enumerate(pilots)]
        # ESI lists attackers by damage done, highest first; the final blow is anywhere.
        rows.sort(key=lambda row: -int(row["damage_done"]))
        return rows

    def _attacker(
        self, pilot: Pilot, final_blow: bool, scale: int, rng: random.Random
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            **_ids(pilot),
            "damage_done": 0 if rng.random() < 0.05 else rng.randint(1, scale),
            "final_blow": final_blow,
            "security_status": pilot.security_status,
        }
        if not pilot.is_player:  # NPCs: a ship, no weapon
            row["ship_type_id"] = rng.choice(self._by_role["ship"])
            return row
        if rng.random() > 0.04:  # a few player attackers come without a ship
            row["ship_type_id"] = rng.choice(self._by_role["ship"])
        row["weapon_type_id"] = rng.choice(self._by_role["weapon"])
        return row

    # -- items ---------------------------------------------------------------------------

    def _items(self, spec: KillSpec, rng: random.Random) -> list[dict[str, Any]] | None:
        roll = rng.random()
        if roll < 0.03:
            return None  # no items key at all
        if roll < 0.08 or spec.victim_ship_type_id == 670:
            return []
        if spec.victim.character_id is None:
            return [
                self._item(rng, flag=rng.choice(_STRUCTURE_FLAGS), role="charge")
                for _ in range(rng.randint(1, 10))
            ]
        items = self._fitting(rng)
        if rng.random() < 0.2:
            items.append(self._container(rng))
        rng.shuffle(items)
        if self._valued_items:  # a stream of its own: the rows above stay what they were
            items.extend(self._extras(seeded(f"extras:{self._seed}:{spec.killmail_id}")))
        return items

    def _extras(self, rng: random.Random) -> list[dict[str, Any]]:
        """Blueprint copies, SKINs and an assembled ship in the ship hangar (fitted)."""
        extras: list[dict[str, Any]] = []
        if rng.random() < 0.15:
            bpc = self._item(rng, flag=_CARGO, role="blueprint", quantity=1)
            extras.append({**bpc, "singleton": _BLUEPRINT_COPY})
        if rng.random() < 0.1:
            extras.append(self._item(rng, flag=_CARGO, role="skin", quantity=1))
        if rng.random() < 0.08:
            ship = {**self._item(rng, flag=_SHIP_HANGAR, role="ship", quantity=1), "singleton": 1}
            ship["items"] = [
                self._item(rng, flag=flag, role=role, quantity=1)
                for flag, role in ((27, "weapon"), (19, "module"), (11, "module"))
            ]
            extras.append(ship)
        return extras

    def _fitting(self, rng: random.Random) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for slots, role in ((_HIGH, "weapon"), (_MID, "module"), (_LOW, "module")):
            for flag in rng.sample(list(slots), rng.randint(0, 4)):
                items.append(self._item(rng, flag=flag, role=role, quantity=1))
        for flag in rng.sample(list(_RIGS), rng.randint(0, 3)):
            items.append(self._item(rng, flag=flag, role="module", quantity=1))
        items.extend(self._item(rng, flag=_CARGO, role="charge") for _ in range(rng.randint(0, 3)))
        if rng.random() < 0.3:
            items.append(self._item(rng, flag=_DRONE_BAY, role="drone"))
        if items and rng.random() < 0.3:
            # Same (type, flag) twice: one row destroyed, one dropped, as ESI splits stacks.
            twin = dict(rng.choice(items))
            dropped = "quantity_dropped" in twin
            twin.pop("quantity_dropped", None)
            twin.pop("quantity_destroyed", None)
            twin["quantity_destroyed" if dropped else "quantity_dropped"] = rng.randint(1, 50)
            items.append(twin)
        return items

    def _item(
        self, rng: random.Random, *, flag: int, role: str, quantity: int | None = None
    ) -> dict[str, Any]:
        amount = quantity or rng.choice((1, rng.randint(2, 500), rng.randint(1_000, 100_000)))
        key = "quantity_dropped" if rng.random() < 0.45 else "quantity_destroyed"
        return {
            "flag": flag,
            "item_type_id": rng.choice(self._by_role[role]),
            key: amount,
            "singleton": 0,
        }

    def _container(self, rng: random.Random) -> dict[str, Any]:
        """A container in the cargo hold with its contents (one level, as ESI)."""
        container = self._item(rng, flag=_CARGO, role="container", quantity=1)
        children = [
            self._item(
                rng,
                flag=rng.choice((_CARGO, 11, 19, 27, 92)),
                role=rng.choice(("module", "charge", "weapon")),
            )
            for _ in range(rng.randint(1, 10))
        ]
        container["items"] = children
        return container


def _ids(pilot: Pilot) -> dict[str, int]:
    out = {
        "character_id": pilot.character_id,
        "corporation_id": pilot.corporation_id,
        "alliance_id": pilot.alliance_id,
        "faction_id": pilot.faction_id,
    }
    return {key: value for key, value in out.items() if value is not None}


def _position(rng: random.Random) -> dict[str, float]:
    coords = [rng.uniform(-1e12, 1e12) for _ in range(3)]
    if rng.random() < 0.15:  # some positions are whole numbers: ESI writes them as ints
        coords = [float(round(c)) for c in coords]
    return {"x": coords[0], "y": coords[1], "z": coords[2]}
