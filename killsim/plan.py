"""Planning kills: who died, who is credited, who else was on the attacker list.

A character's ``recent`` list holds the kills it received: as the victim, as the final
blow, or as the last player to do damage when an NPC got the final blow. A corporation's
list holds the kills its members received that way (and its structures' losses), by the
corporation ids the killmail records. Every planned kill is received by at least one
simulated character, or (``Scenario.untracked_kill_fraction``) by an untracked member of
a tracked corporation only; other simulated characters may appear as ordinary attackers
(they must *not* receive it).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from killsim.generate import UniverseBuilder, kill_times, npc_pilot, seeded
from killsim.model import KillSpec, Pilot
from killsim.scenario import Scenario

KEEPSTAR = 35834
_STRUCTURES = (35832, 35833, 35834, 81826)


@dataclass(frozen=True)
class Sides:
    """The two players (or structure) a kill is about, before extras are added."""

    victim: Pilot
    victim_ship_type_id: int
    credited: Pilot | None
    npc_final_blow: bool


class KillPlanner:
    """Plans kills for one universe from one random source."""

    def __init__(self, builder: UniverseBuilder, scenario: Scenario, rng: random.Random) -> None:
        self.builder = builder
        self.universe = builder.universe
        self.scenario = scenario
        self.rng = rng
        self._ships = [t.type_id for t in self.universe.types.values() if t.role == "ship"]

    # -- sides ------------------------------------------------------------------------

    def _outsider(self, exclude: set[int]) -> Pilot:
        while True:
            char_id = self.rng.choice(self.universe.outsiders)
            if char_id not in exclude:
                return self.universe.pilot(char_id)

    def structure(self, type_id: int | None = None) -> tuple[Pilot, int]:
        """A structure victim: owned by a corporation, no character."""
        corp = self.universe.corporations[self.rng.choice(self.universe.outsider_corps)]
        return (
            Pilot(None, corp.corporation_id, corp.alliance_id),
            type_id or self.rng.choice(_STRUCTURES),
        )

    def ship(self) -> int:
        """A random victim ship (sometimes a capsule)."""
        return 670 if self.rng.random() < 0.08 else self.rng.choice(self._ships)

    def random_sides(self, *, huge: bool) -> Sides:
        """Pick victim and credited attacker so that a simulated character receives it."""
        sc, rng, sims = self.scenario, self.rng, self.universe.simulated
        npc = not huge and rng.random() < sc.npc_final_blow_fraction
        # Only drawn when the scenario has such kills: other worlds keep their streams.
        untracked = not huge and sc.untracked_kill_fraction > 0 and bool(self.universe.members)
        if untracked and rng.random() < sc.untracked_kill_fraction:
            return self.untracked_sides(npc)
        if not huge and len(sims) >= 2 and rng.random() < sc.shared_fraction:
            a, b = rng.sample(sims, 2)
            return Sides(self.universe.pilot(a), self.ship(), self.universe.pilot(b), npc)
        x = self.universe.pilot(rng.choice(sims))
        if huge or rng.random() < sc.structure_fraction:
            victim, ship = self.structure(KEEPSTAR if huge else None)
            return Sides(victim, ship, x, npc)
        assert x.character_id is not None
        if rng.random() < 0.5:
            return Sides(x, self.ship(), self._outsider({x.character_id}), npc)
        return Sides(self._outsider({x.character_id}), self.ship(), x, npc)

    def untracked_sides(self, npc: bool, member_id: int | None = None) -> Sides:
        """A kill or loss of an untracked corporation member (or a structure loss of a
        tracked corporation) against an outsider: no tracked character receives it."""
        rng = self.rng
        if member_id is None:
            member_id = rng.choice(self.universe.members)
        member = self.universe.pilot(member_id)
        roll = rng.random()
        if roll < self.scenario.structure_fraction:
            corp = self.universe.corporations[member.corporation_id or 0]
            victim = Pilot(None, corp.corporation_id, corp.alliance_id)
            return Sides(victim, rng.choice(_STRUCTURES), self._outsider(set()), npc)
        if roll < 0.5:
            return Sides(member, self.ship(), self._outsider({member_id}), npc)
        return Sides(self._outsider({member_id}), self.ship(), member, npc)

    # -- the attacker list --------------------------------------------------------------

    def _extra_count(self, huge: int) -> int:
        if huge:
            return huge - 1
        roll = self.rng.random()
        if roll < 0.4:
            return 0
        if roll < 0.75:
            return self.rng.randint(1, 4)
        if roll < 0.95:
            return self.rng.randint(5, 30)
        return self.rng.randint(31, 250)

    def others(self, sides: Sides, huge: int, ghost: int | None) -> tuple[Pilot, ...]:
        """Attackers besides the final blow (and the credited player on NPC kills)."""
        taken = {
            p.character_id
            for p in (sides.victim, sides.credited)
            if p is not None and p.character_id is not None
        }
        count = self._extra_count(huge)
        if huge:
            self.builder.grow_outsiders(count + len(taken) + 1)
        pool = [c for c in self.universe.outsiders if c not in taken]
        chosen = self.rng.sample(pool, min(count, len(pool)))
        extras = [self.universe.pilot(c) for c in chosen]
        bystanders = [c for c in self.universe.simulated if c not in taken]
        if bystanders and not huge and self.rng.random() < 0.25:
            extras.append(self.universe.pilot(self.rng.choice(bystanders)))
        if sides.npc_final_blow:
            extras.extend(npc_pilot(self.rng) for _ in range(self.rng.randint(0, 3)))
        if ghost is not None:
            corp = self.universe.corporations[self.universe.outsider_corps[0]]
            extras.append(Pilot(ghost, corp.corporation_id, corp.alliance_id, security_status=-2.5))
        return tuple(extras)

    # -- a whole kill -------------------------------------------------------------------

    def spec(
        self,
        killmail_id: int,
        when: datetime,
        sides: Sides,
        *,
        huge: int = 0,
        ghost: int | None = None,
    ) -> KillSpec:
        """The full plan of one kill."""
        rng = self.rng
        system = self.universe.systems[rng.choice(list(self.universe.systems))]
        structure = sides.victim.character_id is None
        final_blow = npc_pilot(rng) if sides.npc_final_blow else sides.credited
        if final_blow is None:  # no credited player: an NPC kill nobody else receives
            final_blow = npc_pilot(rng)
        war = rng.random() < (0.5 if structure else 0.04)
        return KillSpec(
            killmail_id=killmail_id,
            killmail_time=when,
            solar_system_id=system.system_id,
            victim=sides.victim,
            victim_ship_type_id=sides.victim_ship_type_id,
            final_blow=final_blow,
            credited=sides.credited,
            others=self.others(sides, huge, ghost),
            moon_id=rng.choice(system.moon_ids) if rng.random() < 0.05 else None,
            war_id=rng.randint(700_000, 760_000) if war else None,
        )


def recipients(spec: KillSpec, simulated: set[int]) -> frozenset[int]:
    """The simulated characters whose lists hold this kill."""
    ids = {spec.victim.character_id, spec.credited.character_id if spec.credited else None}
    return frozenset(i for i in ids if i is not None and i in simulated)


def corporations_of(spec: KillSpec, npc_corporation: Callable[[int], bool]) -> frozenset[int]:
    """The player corporations whose lists hold this kill: the victim's (a structure's
    owner too) and the credited player's, as recorded on the killmail."""
    ids = {spec.victim.corporation_id, spec.credited.corporation_id if spec.credited else None}
    return frozenset(i for i in ids if i is not None and not npc_corporation(i))


def plan_world_kills(builder: UniverseBuilder, scenario: Scenario, now: datetime) -> list[KillSpec]:
    """Every kill of a new world, oldest first, with increasing killmail ids."""
    rng = seeded(f"kills:{scenario.seed}")
    planner = KillPlanner(builder, scenario, rng)
    times = kill_times(scenario, now, rng)
    recent = [i for i, t in enumerate(times) if (now - t).days < 90]
    huge_at = rng.choice(recent) if scenario.huge_attackers and recent else None
    ghost_at = dict(
        zip(
            rng.sample(recent, min(len(recent), len(builder.universe.ghosts))),
            builder.universe.ghosts,
            strict=False,
        )
    )
    specs: list[KillSpec] = []
    killmail_id = scenario.killmail_id_start
    for index, when in enumerate(times):
        killmail_id += rng.randint(1, 900)
        huge = scenario.huge_attackers if index == huge_at else 0
        sides = planner.random_sides(huge=bool(huge))
        specs.append(planner.spec(killmail_id, when, sides, huge=huge, ghost=ghost_at.get(index)))
    return specs
