"""Static tables (types, factions, NPC corporations, systems) and name generation.

The ids and names are plausible, not authoritative: the simulator needs every id it
uses to resolve through ``/universe/names``, not an accurate copy of EVE's data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

#: Names that look like markup or are far from ASCII: clients must print them verbatim.
TRICKY_NAMES = (
    "[b]Boss[/b]",
    "Ünïcødé ☠",
    "<i>x</i>",
    "Zoë 'Bobby' O'Brien",
    "[red]Red[/red] Ink",
    "名前 テスト",
)

#: The same slots (two simulated characters, outsiders, one corporation) filled with what a
#: bad upstream or a proxy could send (``Scenario.hostile_names``): an OSC window title with
#: BEL, a screen clear, an 8-bit CSI, a right-to-left override, a CR overwrite with an
#: erase-line, a newline and isolates. Clients must show them without obeying them.
HOSTILE_NAMES = (
    "Evil\x1b]0;pwned\x07 [b]Title[/b]",
    "Wipe\x1b[2J\x1b[H Screen",
    "Csi\x9b31m Red",
    "Bidi \u202eSpoof\u202c",
    "Corp\rOverwrite\x1b[K",
    "Two\nLines \u2066x\u2069",
)
#: Appended to every type name and alliance name in hostile mode: an OSC 8 hyperlink,
#: a bell, a C1 string terminator and a left-to-right mark.
HOSTILE_SUFFIX = "\x1b]8;;https://evil.invalid/\x1b\\link\x1b]8;;\x1b\\\x07\x9c\u200e"


@dataclass(frozen=True)
class TypeInfo:
    """An inventory type: id, name, group and what it is used for in killmails."""

    type_id: int
    name: str
    group_id: int
    #: ship | structure | capsule | weapon | module | charge | drone | container |
    #: blueprint (carried as copies, singleton 2) | skin
    role: str


FACTIONS: tuple[tuple[int, str], ...] = (
    (500001, "Caldari State"),
    (500002, "Minmatar Republic"),
    (500003, "Amarr Empire"),
    (500004, "Gallente Federation"),
    (500010, "Guristas Pirates"),
    (500011, "Angel Cartel"),
    (500012, "Blood Raider Covenant"),
    (500019, "Sansha's Nation"),
    (500020, "Serpentis"),
)

#: NPC corporations: (corporation_id, name, ticker, faction_id).
NPC_CORPORATIONS: tuple[tuple[int, str, str, int], ...] = (
    (1000127, "Guristas", "GUR", 500010),
    (1000124, "Archangels", "ARCH", 500011),
    (1000134, "Blood Raiders", "BLRA", 500012),
    (1000161, "True Creations", "TRUC", 500019),
    (1000135, "Serpentis Corporation", "SERP", 500020),
)

_SHIPS = (
    (587, "Rifter", 25),
    (593, "Tristan", 25),
    (602, "Kestrel", 25),
    (597, "Punisher", 25),
    (621, "Caracal", 26),
    (622, "Stabber", 26),
    (626, "Vexor", 26),
    (624, "Maller", 26),
    (638, "Raven", 27),
    (641, "Megathron", 27),
    (643, "Armageddon", 27),
    (639, "Tempest", 27),
    (11196, "Claw", 831),
    (11202, "Ares", 831),
    (12005, "Ishtar", 358),
    (11993, "Cerberus", 358),
    (17738, "Machariel", 27),
    (19720, "Revelation", 485),
    (23913, "Nyx", 659),
    (29984, "Tengu", 963),
    (22852, "Hel", 659),
    (24690, "Hurricane", 419),
    (16236, "Gila", 26),
    (33468, "Astero", 25),
    (47271, "Leshak", 27),
    (45056, "Rodiva", 26),
)
_STRUCTURES = (
    (35832, "Astrahus", 1657),
    (35833, "Fortizar", 1657),
    (35834, "Keepstar", 1657),
    (81826, "Metenox Moon Drill", 4744),
)
_WEAPONS = (
    (2889, "200mm AutoCannon II", 55),
    (2929, "425mm AutoCannon II", 55),
    (3170, "Light Neutron Blaster II", 74),
    (3186, "Neutron Blaster Cannon II", 74),
    (2961, "1400mm Howitzer Artillery II", 55),
    (3057, "Heavy Pulse Laser II", 53),
    (2410, "Heavy Missile Launcher II", 510),
    (2420, "Torpedo Launcher II", 508),
    (2629, "Scourge Fury Heavy Missile", 654),
    (2488, "Warrior II", 100),
    (40563, "Ion Siege Blaster", 4060),
    (37298, "Covert Cynosural Field Generator I", 658),
)
_MODULES = (
    (2048, "Damage Control II", 60),
    (4405, "Drone Damage Amplifier II", 645),
    (5971, "Stasis Webifier II", 65),
    (4787, "Sensor Booster II", 212),
    (31105, "Small Trimark Armor Pump I", 773),
    (31169, "Medium Trimark Armor Pump I", 773),
    (14254, "Domination 100MN Afterburner", 46),
    (41034, "Small Armor Repairer II", 62),
    (33848, "Medium Ancillary Shield Booster", 1156),
    (15739, "Republic Fleet Gyrostabilizer", 59),
    (11309, "Shield Recharger II", 43),
    (30987, "Medium Core Defense Field Extender I", 774),
    (17559, "Caldari Navy Ballistic Control System", 367),
    (41196, "Capacitor Battery II", 61),
)
_CHARGES = (
    (185, "EMP S", 83),
    (486, "Antimatter Charge S", 85),
    (23059, "Hail M", 372),
    (17889, "Helium Isotopes", 423),
    (16635, "Evaporite Deposits", 427),
    (16633, "Hydrocarbons", 427),
    (28756, "Nanite Repair Paste", 916),
)
_DRONES = ((2456, "Hobgoblin II", 100), (2454, "Hobgoblin I", 100), (40346, "Templar II", 1652))
_CONTAINERS = (
    (3467, "Small Secure Container", 340),
    (3466, "Medium Secure Container", 340),
    (37456, "Mobile Depot", 1246),
)
_BLUEPRINTS = (
    (691, "Rifter Blueprint", 105),
    (2049, "Damage Control II Blueprint", 344),
    (2890, "200mm AutoCannon II Blueprint", 344),
)
_SKINS = (
    (44131, "Rifter Valklear Glory SKIN", 1950),
    (47513, "Tengu Kopis Edge SKIN", 1950),
)
CAPSULE = TypeInfo(670, "Capsule", 29, "capsule")


def type_table(*, hostile: bool = False) -> tuple[TypeInfo, ...]:
    """Every inventory type the simulator uses (``hostile``: names end in controls)."""
    groups = (
        ("ship", _SHIPS),
        ("structure", _STRUCTURES),
        ("weapon", _WEAPONS),
        ("module", _MODULES),
        ("charge", _CHARGES),
        ("drone", _DRONES),
        ("container", _CONTAINERS),
        ("blueprint", _BLUEPRINTS),
        ("skin", _SKINS),
    )
    table = [TypeInfo(tid, name, group, role) for role, rows in groups for tid, name, group in rows]
    if hostile:
        table = [replace(t, name=t.name + HOSTILE_SUFFIX) for t in (CAPSULE, *table)]
        return tuple(table)
    return (CAPSULE, *table)


#: Solar systems with their real names; more are generated with null-sec style names.
KNOWN_SYSTEMS = (
    (30000142, "Jita", 0.95),
    (30002187, "Amarr", 1.0),
    (30002659, "Dodixie", 0.87),
    (30002510, "Rens", 0.9),
    (30000144, "Perimeter", 0.95),
    (30003088, "Tama", 0.3),
    (30002756, "Amamake", 0.4),
)

_SYLLABLES = (
    "ka",
    "ra",
    "vel",
    "tor",
    "mi",
    "an",
    "sel",
    "dor",
    "que",
    "li",
    "zan",
    "ther",
    "o",
    "ris",
    "mar",
    "en",
    "jo",
    "thi",
    "ul",
    "bro",
    "ska",
    "nyx",
    "el",
    "ve",
)
_CORP_WORDS = (
    "Industries",
    "Holdings",
    "Syndicate",
    "Mining Corp",
    "Logistics",
    "Reclamation",
    "Security",
    "Enterprises",
    "Collective",
    "Salvage",
    "Armaments",
    "Directive",
)
_ALLIANCE_WORDS = (
    "Coalition",
    "Alliance",
    "Federation",
    "Legion",
    "Accord",
    "Compact",
    "Union",
    "Consortium",
)


_TICKER_TRIES = 200  # random tries per ticker shape before a roomier one
_TICKER_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class NameMaker:
    """Makes unique, pronounceable names and tickers from a seeded random source.

    ``hostile``: :attr:`tricky` holds :data:`HOSTILE_NAMES` and alliance names end in
    :data:`HOSTILE_SUFFIX` (``Scenario.hostile_names``).
    """

    def __init__(self, rng: random.Random, *, hostile: bool = False) -> None:
        self._rng = rng
        self._hostile = hostile
        #: The names given to the first characters and one corporation.
        self.tricky = HOSTILE_NAMES if hostile else TRICKY_NAMES
        self._used: set[str] = set(self.tricky)
        self._tickers: set[str] = set()

    def _word(self, syllables: int) -> str:
        return "".join(self._rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()

    def _unique(self, make: str) -> str:
        name = make
        while name in self._used:
            name = f"{make} {self._rng.randint(2, 999)}"
        self._used.add(name)
        return name

    def character(self) -> str:
        """A character name such as ``Kavel Torris``."""
        return self._unique(
            f"{self._word(self._rng.randint(2, 3))} {self._word(self._rng.randint(1, 3))}"
        )

    def corporation(self) -> str:
        """A corporation name such as ``Kavel Holdings``."""
        return self._unique(f"{self._word(2)} {self._rng.choice(_CORP_WORDS)}")

    def alliance(self) -> str:
        """An alliance name such as ``Torri Coalition``."""
        name = self._unique(f"{self._word(2)} {self._rng.choice(_ALLIANCE_WORDS)}")
        return name + HOSTILE_SUFFIX if self._hostile else name

    def system(self) -> str:
        """A null-sec style system name such as ``X7-OMU``."""
        letters = "ABCDEFGHJKLMNOPQRSTUVWXYZ0123456789"
        while True:
            name = f"{self._rng.choice(letters)}{self._rng.choice(letters)}-" + "".join(
                self._rng.choice(letters) for _ in range(4)
            )
            if name not in self._used:
                self._used.add(name)
                return name

    def ticker(self, name: str) -> str:
        """A unique ticker (at most 5 characters) derived from a name."""
        base = "".join(ch for ch in name.upper() if ch.isalnum())[:4] or "X"
        ticker, tries = base, 0
        while ticker in self._tickers:
            # 90 two-digit variants per 3-letter prefix; once they run short (tens of
            # thousands of corporations share few prefixes), shorter prefixes, more digits.
            keep = max(0, 3 - tries // _TICKER_TRIES)
            if keep == 0:
                ticker = "".join(self._rng.choice(_TICKER_CHARS) for _ in range(5))
            else:
                digits = 5 - keep
                ticker = f"{base[:keep]}{self._rng.randint(10 ** (digits - 1), 10**digits - 1)}"
            tries += 1
        self._tickers.add(ticker)
        return ticker
