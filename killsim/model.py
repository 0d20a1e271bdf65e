"""The simulated universe's records: characters, corporations, alliances, systems, kills."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Character:
    """A character; ``simulated`` ones can log in and own killmail lists."""

    character_id: int
    name: str
    corporation_id: int
    alliance_id: int | None
    birthday: datetime
    security_status: float
    gender: str
    race_id: int
    bloodline_id: int
    simulated: bool = False
    faction_id: int | None = None  #: enlisted in factional warfare


@dataclass(frozen=True)
class Corporation:
    """A player or NPC corporation."""

    corporation_id: int
    name: str
    ticker: str
    alliance_id: int | None
    ceo_id: int
    creator_id: int
    member_count: int
    tax_rate: float
    date_founded: datetime | None
    faction_id: int | None = None
    npc: bool = False


@dataclass(frozen=True)
class Alliance:
    """An alliance of player corporations."""

    alliance_id: int
    name: str
    ticker: str
    creator_id: int
    creator_corporation_id: int
    executor_corporation_id: int
    date_founded: datetime


@dataclass(frozen=True)
class SolarSystem:
    """A solar system with its moons (moon ids appear in some killmails)."""

    system_id: int
    name: str
    constellation_id: int
    security_status: float
    position: tuple[float, float, float]
    moon_ids: tuple[int, ...]


@dataclass(frozen=True)
class Pilot:
    """Who stands on one side of a kill: a player, an NPC or a structure's owner."""

    character_id: int | None
    corporation_id: int | None
    alliance_id: int | None = None
    faction_id: int | None = None
    security_status: float = 0.0

    @property
    def is_player(self) -> bool:
        """True for a character, False for an NPC or a structure."""
        return self.character_id is not None


@dataclass(frozen=True)
class KillSpec:
    """What a killmail is about; the body's details are derived from it and the seed.

    ``credited`` is the player whose list gets the kill on the attacking side: the final
    blow, or the last player to do damage when an NPC got the final blow.
    """

    killmail_id: int
    killmail_time: datetime
    solar_system_id: int
    victim: Pilot
    victim_ship_type_id: int
    final_blow: Pilot
    credited: Pilot | None
    others: tuple[Pilot, ...]
    moon_id: int | None = None
    war_id: int | None = None


@dataclass(frozen=True)
class KillmailRecord:
    """A killmail as the world knows it: identity, time and who receives it."""

    killmail_id: int
    killmail_hash: str
    killmail_time: datetime
    recipients: frozenset[int]
    #: The player corporations whose lists hold it (the victim's, the credited player's).
    corporations: frozenset[int] = frozenset()
