"""Generating a universe and its kills from a scenario and a seed.

Everything comes from ``random.Random`` objects seeded with strings, so the same
scenario and seed give the same ids, names and kills in every process.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from killsim.model import Alliance, Character, Corporation, Pilot, SolarSystem
from killsim.names import (
    FACTIONS,
    KNOWN_SYSTEMS,
    NPC_CORPORATIONS,
    NameMaker,
    TypeInfo,
    type_table,
)
from killsim.scenario import Scenario

HISTORY_DAYS = 90


def seeded(label: str) -> random.Random:
    """A random source for simulation, seeded with a string (same in every process)."""
    return random.Random(label)  # noqa: S311 - deterministic simulation, not security


#: Character id ranges: legacy ids, today's 2,1xx,xxx,xxx ids, and ids past 2**31.
_CHARACTER_POOLS = (
    (90_000_000, 98_999_999),
    (2_112_000_000, 2_147_000_000),
    (2_148_000_000, 2_199_999_999),
)
_POOL_WEIGHTS = (0.35, 0.5, 0.15)
_MILITIAS = (500001, 500002, 500003, 500004)


@dataclass
class Universe:
    """Every entity the world knows, by id (mutable: new kills may add outsiders)."""

    characters: dict[int, Character] = field(default_factory=dict)
    corporations: dict[int, Corporation] = field(default_factory=dict)
    alliances: dict[int, Alliance] = field(default_factory=dict)
    systems: dict[int, SolarSystem] = field(default_factory=dict)
    types: dict[int, TypeInfo] = field(default_factory=dict)
    factions: dict[int, str] = field(default_factory=dict)
    simulated: list[int] = field(default_factory=list)
    outsiders: list[int] = field(default_factory=list)
    outsider_corps: list[int] = field(default_factory=list)
    ghosts: list[int] = field(default_factory=list)
    #: ``Scenario.corporations``: the player corporations of the tracked characters, their
    #: untracked members (never log in, not outsiders) and the initial Directors.
    tracked_corporations: list[int] = field(default_factory=list)
    members: list[int] = field(default_factory=list)
    directors: set[int] = field(default_factory=set)

    def pilot(self, character_id: int) -> Pilot:
        """The killmail side of a character: ids and security status."""
        char = self.characters[character_id]
        return Pilot(
            char.character_id,
            char.corporation_id,
            char.alliance_id,
            char.faction_id,
            security_status=char.security_status,
        )


class _Ids:
    """Unique random ids from ranges."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[int] = set()

    def take(self, low: int, high: int) -> int:
        while True:
            value = self._rng.randint(low, high)
            if value not in self._used:
                self._used.add(value)
                return value

    def character(self, pool: int | None = None) -> int:
        """A new character id from one of the id ranges (random when ``pool`` is None)."""
        if pool is None:
            pool = self._rng.choices(range(3), weights=_POOL_WEIGHTS)[0]
        return self.take(*_CHARACTER_POOLS[pool])


@dataclass
class UniverseBuilder:
    """Builds a :class:`Universe` step by step from one random source (kept by the world
    so that later kills can add characters from the same stream)."""

    rng: random.Random
    now: datetime
    universe: Universe = field(default_factory=Universe)
    hostile: bool = False  #: ``Scenario.hostile_names``

    def __post_init__(self) -> None:
        self.ids = _Ids(self.rng)
        self.names = NameMaker(self.rng, hostile=self.hostile)

    def _date(self, first_year: int) -> datetime:
        start = datetime(first_year, 1, 1, tzinfo=UTC)
        span_s = int((self.now - start).total_seconds()) - 86_400 * 120
        return start + timedelta(seconds=self.rng.randint(0, max(span_s, 1)))

    def alliance(self, corp_ids: list[int], name: str | None = None) -> int:
        """Create an alliance led by the first of ``corp_ids``; its id."""
        alliance_id = (
            self.ids.take(1_000_000_000, 1_999_999_999)
            if self.rng.random() < 0.1
            else self.ids.take(99_000_000, 99_014_999)
        )
        name = name or self.names.alliance()
        self.universe.alliances[alliance_id] = Alliance(
            alliance_id,
            name,
            self.names.ticker(name),
            creator_id=0,
            creator_corporation_id=corp_ids[0],
            executor_corporation_id=corp_ids[0],
            date_founded=self._date(2008),
        )
        return alliance_id

    def corporation(self, alliance_id: int | None, name: str | None = None) -> int:
        """Create a player corporation; its id."""
        corp_id = (
            self.ids.take(100_000_000, 999_999_999)
            if self.rng.random() < 0.1
            else self.ids.take(98_000_000, 98_799_999)
        )
        name = name or self.names.corporation()
        self.universe.corporations[corp_id] = Corporation(
            corp_id,
            name,
            self.names.ticker(name),
            alliance_id,
            ceo_id=0,
            creator_id=0,
            member_count=self.rng.randint(1, 900),
            tax_rate=self.rng.choice([0.0, 0.1, 0.05]),
            date_founded=self._date(2005),
        )
        return corp_id

    def character(
        self, corp_id: int, *, simulated: bool, pool: int | None = None, name: str | None = None
    ) -> int:
        """Create a character in a corporation; its id."""
        corp = self.universe.corporations[corp_id]
        char_id = self.ids.character(pool)
        self.universe.characters[char_id] = Character(
            char_id,
            name or self.names.character(),
            corp_id,
            corp.alliance_id,
            birthday=self._date(2004),
            security_status=round(self.rng.uniform(-10, 5), 1),
            gender=self.rng.choice(["female", "male"]),
            race_id=self.rng.choice([1, 2, 4, 8]),
            bloodline_id=self.rng.randint(1, 14),
            simulated=simulated,
            faction_id=self.rng.choice(_MILITIAS) if self.rng.random() < 0.1 else None,
        )
        (self.universe.simulated if simulated else self.universe.outsiders).append(char_id)
        return char_id

    def grow_outsiders(self, count: int) -> None:
        """Add outsider characters until there are at least ``count``."""
        while len(self.universe.outsiders) < count:
            self.character(self.rng.choice(self.universe.outsider_corps), simulated=False)

    def fix_founders(self) -> None:
        """Give corporations and alliances real CEOs and creators from their members."""
        members: dict[int, int] = {}
        for char in self.universe.characters.values():
            members.setdefault(char.corporation_id, char.character_id)
        for corp in list(self.universe.corporations.values()):
            if corp.npc:
                continue
            ceo = members.get(corp.corporation_id) or self.universe.outsiders[0]
            self.universe.corporations[corp.corporation_id] = replace(
                corp, ceo_id=ceo, creator_id=ceo
            )
        for ally in list(self.universe.alliances.values()):
            ceo = self.universe.corporations[ally.creator_corporation_id].ceo_id
            self.universe.alliances[ally.alliance_id] = replace(ally, creator_id=ceo)


def _side(b: UniverseBuilder, alliances: int, named: Sequence[str] = ()) -> list[int]:
    """Alliances with one to three corporations each, plus one corporation on its own."""
    corps: list[int] = []
    for index in range(alliances):
        first = b.corporation(None, named[index] if index < len(named) else None)
        group = [first] + [b.corporation(None) for _ in range(b.rng.randint(0, 2))]
        alliance_id = b.alliance(group)
        for corp_id in group:
            corp = b.universe.corporations[corp_id]
            b.universe.corporations[corp_id] = replace(corp, alliance_id=alliance_id)
        corps.extend(group)
    corps.append(b.corporation(None))
    return corps


def _static(b: UniverseBuilder) -> None:
    u = b.universe
    u.types = {t.type_id: t for t in type_table(hostile=b.hostile)}
    u.factions = dict(FACTIONS)
    for corp_id, name, ticker, faction_id in NPC_CORPORATIONS:
        u.corporations[corp_id] = Corporation(
            corp_id,
            name,
            ticker,
            None,
            3_004_000 + corp_id % 1000,
            1,
            0,
            0.0,
            None,
            faction_id,
            npc=True,
        )
    known = [(sid, name, sec) for sid, name, sec in KNOWN_SYSTEMS]
    generated = [
        (b.ids.take(30_000_200, 30_004_999), b.names.system(), round(b.rng.uniform(-1, 0), 2))
        for _ in range(22)
    ]
    wormholes = [(b.ids.take(31_000_005, 31_002_500), b.names.system(), -0.99) for _ in range(3)]
    for index, (sid, name, sec) in enumerate(known + generated + wormholes):
        moons = tuple(40_000_000 + index * 1_000 + k for k in range(1, b.rng.randint(2, 7)))
        position = (
            b.rng.uniform(-5e17, 5e17),
            b.rng.uniform(-1e17, 1e17),
            b.rng.uniform(-5e17, 5e17),
        )
        u.systems[sid] = SolarSystem(sid, name, 20_000_000 + index % 40, sec, position, moons)


def build_universe(scenario: Scenario, now: datetime) -> UniverseBuilder:
    """Factions, systems, types, alliances, corporations and characters."""
    b = UniverseBuilder(seeded(f"universe:{scenario.seed}"), now, hostile=scenario.hostile_names)
    _static(b)
    tricky = b.names.tricky
    sim_corps = _side(b, max(1, math.ceil(scenario.characters / 10)), named=[tricky[4]])
    out_corps = _side(b, 3 + scenario.characters // 10)
    for index in range(scenario.characters):
        pool = (1, 0, 2)[index] if index < 3 else None  # the first three cover every id range
        name = tricky[index] if index < 2 else None
        b.character(sim_corps[index % len(sim_corps)], simulated=True, pool=pool, name=name)
    pool_size = max(300, min(3000, scenario.killmails // 2))
    for index in range(pool_size):
        name = tricky[2 + index] if index < 4 and index != 2 else None
        b.character(
            b.rng.choice(out_corps), simulated=False, pool=2 if index == 0 else None, name=name
        )
    b.universe.outsider_corps = out_corps
    b.universe.ghosts = [b.ids.character(1) for _ in range(scenario.unknown_name_ids)]
    b.fix_founders()
    if scenario.corporations:
        _corporations(b, scenario)
    return b


def _corporations(b: UniverseBuilder, scenario: Scenario) -> None:
    """Put tracked characters into new corporations (the first in an alliance) and give
    each its Directors and untracked members. Runs last, so that it only adds to the
    world ``corporations = 0`` would build."""
    u = b.universe
    corp_ids = [b.corporation(None) for _ in range(scenario.corporations)]
    alliance_id = b.alliance(corp_ids[:1])
    u.corporations[corp_ids[0]] = replace(u.corporations[corp_ids[0]], alliance_id=alliance_id)
    u.tracked_corporations = corp_ids
    if scenario.corporation_members:  # in character order; the rest stay where they are
        owners = [i for i, n in enumerate(scenario.corporation_members) for _ in range(n)]
    else:
        owners = [i % len(corp_ids) for i in range(len(u.simulated))]
    directors = scenario.per_corporation("directors_per_corporation")
    untracked = scenario.per_corporation("untracked_members")
    for index, (char_id, owner) in enumerate(zip(u.simulated, owners, strict=False)):
        corp = u.corporations[corp_ids[owner]]
        u.characters[char_id] = replace(
            u.characters[char_id], corporation_id=corp.corporation_id, alliance_id=corp.alliance_id
        )
        if owners[:index].count(owner) < directors[owner]:
            u.directors.add(char_id)
    for owner, corp_id in enumerate(corp_ids):
        for _ in range(untracked[owner]):
            char_id = b.character(corp_id, simulated=False)
            u.outsiders.remove(char_id)  # members: on their corporation's side only
            u.members.append(char_id)
        tracked = [c for c in u.simulated if u.characters[c].corporation_id == corp_id]
        ceo = next((c for c in tracked if c in u.directors), tracked[0])
        u.corporations[corp_id] = replace(
            u.corporations[corp_id],
            ceo_id=ceo,
            creator_id=ceo,
            member_count=len(tracked) + untracked[owner],
        )
    ally = u.alliances[alliance_id]
    u.alliances[alliance_id] = replace(ally, creator_id=u.corporations[corp_ids[0]].ceo_id)


def npc_pilot(rng: random.Random) -> Pilot:
    """An NPC attacker: only a faction, or only a corporation."""
    if rng.random() < 0.5:
        return Pilot(None, None, faction_id=rng.choice(FACTIONS)[0])
    return Pilot(None, rng.choice(NPC_CORPORATIONS)[0])


def kill_times(scenario: Scenario, now: datetime, rng: random.Random) -> list[datetime]:
    """Times of the listed kills (last ~90 days) and the old ones, oldest first."""
    recent = [
        now - timedelta(seconds=rng.randint(60, (HISTORY_DAYS - 1) * 86_400 + 80_000))
        for _ in range(scenario.killmails)
    ]
    old = [
        now - timedelta(seconds=rng.randint((HISTORY_DAYS + 1) * 86_400, 120 * 86_400))
        for _ in range(scenario.old_killmails)
    ]
    return sorted(t.replace(microsecond=0) for t in recent + old)
