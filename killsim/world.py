"""The simulated world: who exists, which kills happened, who received them.

Thread-safe: ESI handler threads read it while a test adds kills, changes roles or moves
characters. Bodies are rendered once to ESI's exact bytes; :meth:`World.body` hands out a
fresh copy each time.

Corporations: a corporation's list holds every killmail that records it as the victim's
corporation or the credited player's (``KillmailRecord.corporations``), so a character
who moves leaves its old kills with the old corporation, as on ESI. Roles live here too
(``/characters/{id}/roles`` and the corporation route's Director check read them).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from killsim.bodies import BodyMaker, encode
from killsim.clock import Clock
from killsim.generate import HISTORY_DAYS, Universe, build_universe, seeded
from killsim.model import (
    Alliance,
    Character,
    Corporation,
    KillmailRecord,
    KillSpec,
    Pilot,
    SolarSystem,
)
from killsim.names import TypeInfo
from killsim.plan import KillPlanner, Sides, corporations_of, plan_world_kills, recipients
from killsim.scenario import DIRECTOR, Scenario, min_sync_time_s

#: Roles ``/characters/{id}/roles`` may list (the 2026-08-18 document's enum).
CORPORATION_ROLES = frozenset(
    {
        *(f"Account_Take_{n}" for n in range(1, 8)),
        "Accountant",
        "Auditor",
        "Brand_Manager",
        "Communications_Officer",
        "Config_Equipment",
        "Config_Starbase_Equipment",
        *(f"Container_Take_{n}" for n in range(1, 8)),
        "Contract_Manager",
        "Deliveries_Container_Take",
        "Deliveries_Query",
        "Deliveries_Take",
        "Diplomat",
        DIRECTOR,
        "Factory_Manager",
        "Fitting_Manager",
        *(f"Hangar_Query_{n}" for n in range(1, 8)),
        *(f"Hangar_Take_{n}" for n in range(1, 8)),
        "Junior_Accountant",
        "Personnel_Manager",
        "Project_Manager",
        "Rent_Factory_Facility",
        "Rent_Office",
        "Rent_Research_Facility",
        "Security_Officer",
        "Skill_Plan_Manager",
        "Starbase_Defense_Operator",
        "Starbase_Fuel_Technician",
        "Station_Manager",
        "Trader",
    }
)


def is_npc_corporation(corporation_id: int) -> bool:
    """NPC corporations have ids 1,000,000 to 2,000,000 (and no killmail list)."""
    return 1_000_000 <= corporation_id < 2_000_000


@dataclass(frozen=True)
class Roles:
    """A character's corporation roles, as ``/characters/{id}/roles`` answers them."""

    roles: tuple[str, ...] = ()
    roles_at_base: tuple[str, ...] = ()
    roles_at_hq: tuple[str, ...] = ()
    roles_at_other: tuple[str, ...] = ()

    @property
    def director(self) -> bool:
        """True when the character has the Director role (corporation-wide)."""
        return DIRECTOR in self.roles

    def to_json(self) -> dict[str, list[str]]:
        """The route's body."""
        return {
            "roles": list(self.roles),
            "roles_at_base": list(self.roles_at_base),
            "roles_at_hq": list(self.roles_at_hq),
            "roles_at_other": list(self.roles_at_other),
        }


@dataclass(frozen=True)
class CorporationInfo:
    """A corporation of the scenario as it stands now (:meth:`World.corporations`)."""

    corporation_id: int
    name: str
    ticker: str
    alliance_id: int | None
    director_ids: tuple[int, ...]  #: current members with the Director role
    member_ids: tuple[int, ...]  #: every current member, tracked or not
    tracked_member_ids: tuple[int, ...]  #: members who can log in (simulated)
    untracked_member_ids: tuple[int, ...]  #: members who never log in


@dataclass(frozen=True)
class WorkloadSummary:
    """What a complete sync of every simulated character has to fetch, right now.

    ``min_sync_time_s`` is a lower bound for one client IP and application, from the
    scenario's buckets alone (no latency): every list page and body fetched once. With
    corporations it covers their lists and bodies too, assuming a corporation's walk may
    spread its pages over the ``corp-killmail`` buckets of all its current directors.
    """

    characters: int
    killmails_total: int
    listed_killmails: int
    shared_killmails: int
    old_killmails: int
    list_rows: int
    list_pages: int
    max_pages_per_character: int
    max_attackers: int
    min_sync_time_s: float
    # -- corporations (all 0 without them) ------------------------------------------------
    corporations: int = 0  #: the scenario's corporations (``World.corporations``)
    corporation_killmails: int = 0  #: killmails in their lists (union)
    corporation_only_killmails: int = 0  #: ... that no character's own list holds
    corporation_list_pages: int = 0  #: pages of all their lists
    max_pages_per_director: int = 0  #: max over corporations of ceil(pages / directors)
    #: Bound of syncing the corporations alone, a walk using every director's bucket.
    min_corporation_sync_time_s: float = 0.0


class World:
    """Characters, corporations, alliances, systems, types and killmails of a scenario."""

    def __init__(self, scenario: Scenario, clock: Clock) -> None:
        self.scenario = scenario
        self._clock = clock
        self._lock = threading.RLock()
        self.created_at = clock.now().replace(microsecond=0)
        self._builder = build_universe(scenario, self.created_at)
        self._universe: Universe = self._builder.universe
        self._planner = KillPlanner(self._builder, scenario, seeded(f"added:{scenario.seed}"))
        self._bodies = BodyMaker(
            scenario.seed, self._universe.types, valued_items=scenario.valued_items
        )
        self._records: dict[int, KillmailRecord] = {}
        self._bytes: dict[int, bytes] = {}
        self._by_character: dict[int, list[int]] = {c: [] for c in self._universe.simulated}
        self._by_corporation: dict[int, list[int]] = {}
        self._tracked_corporations: list[int] = list(self._universe.tracked_corporations)
        self._member_ids = frozenset(self._universe.members)
        self._roles: dict[int, Roles] = {
            c: Roles((DIRECTOR,)) for c in sorted(self._universe.directors)
        }
        self._max_attackers = 0
        for spec in plan_world_kills(self._builder, scenario, self.created_at):
            self._store(spec)

    # -- killmails ------------------------------------------------------------------------

    def _store(self, spec: KillSpec) -> KillmailRecord:
        data = encode(self._bodies.body(spec))
        # The hash depends on seed and id only, so it is the same whenever the world is made.
        digest = hashlib.sha1(
            f"killmail:{self.scenario.seed}:{spec.killmail_id}".encode(), usedforsecurity=False
        )
        record = KillmailRecord(
            spec.killmail_id,
            digest.hexdigest(),
            spec.killmail_time,
            recipients(spec, set(self._universe.simulated)),
            corporations_of(spec, is_npc_corporation),
        )
        with self._lock:
            self._records[record.killmail_id] = record
            self._bytes[record.killmail_id] = data
            for char_id in record.recipients:
                self._by_character[char_id].append(record.killmail_id)
            for corp_id in record.corporations:
                self._by_corporation.setdefault(corp_id, []).append(record.killmail_id)
            self._max_attackers = max(self._max_attackers, 2 + len(spec.others))
        return record

    def record(self, killmail_id: int) -> KillmailRecord | None:
        """The killmail's id, hash, time and recipients (None when unknown)."""
        with self._lock:
            return self._records.get(killmail_id)

    @property
    def killmails(self) -> Mapping[int, KillmailRecord]:
        """Every killmail, listed or not (a snapshot)."""
        with self._lock:
            return dict(self._records)

    def body_bytes(self, killmail_id: int) -> bytes | None:
        """The exact bytes ESI sends for this killmail."""
        with self._lock:
            return self._bytes.get(killmail_id)

    def body(self, killmail_id: int) -> dict[str, Any]:
        """The ESI JSON of a killmail (a fresh copy); KeyError when unknown."""
        data = self.body_bytes(killmail_id)
        if data is None:
            raise KeyError(killmail_id)
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    def recent(self, character_id: int, now: datetime | None = None) -> list[tuple[int, str]]:
        """What the character's recent list holds at ``now``: newest first."""
        with self._lock:
            records = [self._records[k] for k in self._by_character.get(character_id, [])]
        return self._listed(records, now)

    def corporation_recent(
        self, corporation_id: int, now: datetime | None = None
    ) -> list[tuple[int, str]]:
        """What the corporation's recent list holds at ``now``: newest first (the kills
        and losses of its members, tracked or not, and of its structures)."""
        with self._lock:
            records = [self._records[k] for k in self._by_corporation.get(corporation_id, [])]
        return self._listed(records, now)

    def _listed(self, records: list[KillmailRecord], now: datetime | None) -> list[tuple[int, str]]:
        cutoff = (now or self._clock.now()) - timedelta(days=HISTORY_DAYS)
        rows = [r for r in records if r.killmail_time >= cutoff]
        rows.sort(key=lambda r: (r.killmail_time, r.killmail_id), reverse=True)
        return [(r.killmail_id, r.killmail_hash) for r in rows]

    def ground_truth(self, now: datetime | None = None) -> dict[int, dict[int, str]]:
        """``{character_id: {killmail_id: hash}}``: what a complete sync stores, once every
        list cache has refreshed (kills added at runtime included)."""
        return {char_id: dict(self.recent(char_id, now)) for char_id in self._universe.simulated}

    def corporation_ground_truth(self, now: datetime | None = None) -> dict[int, list[int]]:
        """``{corporation_id: [killmail_id, ...]}`` (newest first) of every corporation of
        :meth:`corporations`: what a complete corporation sync stores, once every list
        cache has refreshed (untracked members' kills included)."""
        with self._lock:
            corps = list(self._tracked_corporations)
        return {c: [k for k, _ in self.corporation_recent(c, now)] for c in corps}

    def add_kill(
        self,
        *,
        victim: int | None = None,
        attacker: int | None = None,
        npc_final_blow: bool = False,
        killmail_time: datetime | None = None,
    ) -> int:
        """Add a kill happening now (or at ``killmail_time``); returns its killmail id.

        ``victim`` and ``attacker`` are character ids (``None``: a random outsider);
        ``attacker`` is credited with the final blow, or is the last player to do damage
        when ``npc_final_blow``. The kill shows in lists once their cache refreshes.
        """
        if victim is not None and victim == attacker:
            raise ValueError("a character cannot kill itself: victim and attacker must differ")
        with self._lock:
            sides = Sides(
                self._pilot_or_outsider(victim),
                self._planner.ship(),
                self._pilot_or_outsider(attacker),
                npc_final_blow,
            )
            killmail_id = max(self._records, default=self.scenario.killmail_id_start) + 1
            when = (killmail_time or self._clock.now()).replace(microsecond=0)
            self._store(self._planner.spec(killmail_id, when, sides))
            return killmail_id

    def add_corporation_kill(
        self,
        corporation_id: int,
        *,
        member_id: int | None = None,
        npc_final_blow: bool = False,
        killmail_time: datetime | None = None,
    ) -> int:
        """Add a kill or loss of an untracked member of the corporation (``member_id``, or
        a random one; sometimes a structure loss of the corporation) against an outsider:
        only the corporation's list shows it, once its cache refreshes. Its killmail id."""
        with self._lock:
            untracked = self._untracked_members(corporation_id)
            if member_id is None:
                if not untracked:
                    raise KeyError(f"corporation {corporation_id} has no untracked member")
                member_id = self._planner.rng.choice(untracked)
            elif member_id not in untracked:
                raise KeyError(f"{member_id} is not an untracked member of {corporation_id}")
            sides = self._planner.untracked_sides(npc_final_blow, member_id)
            killmail_id = max(self._records, default=self.scenario.killmail_id_start) + 1
            when = (killmail_time or self._clock.now()).replace(microsecond=0)
            self._store(self._planner.spec(killmail_id, when, sides))
            return killmail_id

    def _untracked_members(self, corporation_id: int) -> list[int]:
        simulated = set(self._universe.simulated)
        return [
            c.character_id
            for c in self._universe.characters.values()
            if c.corporation_id == corporation_id
            and c.character_id not in simulated
            and c.character_id in self._member_ids
        ]

    def _pilot_or_outsider(self, character_id: int | None) -> Pilot:
        if character_id is None:
            character_id = self._planner.rng.choice(self._universe.outsiders)
        if character_id not in self._universe.characters:
            raise KeyError(f"unknown character {character_id}")
        return self._universe.pilot(character_id)

    # -- entities ---------------------------------------------------------------------------

    @property
    def characters(self) -> tuple[Character, ...]:
        """The simulated characters (the ones that can log in), in creation order."""
        return tuple(self._universe.characters[c] for c in self._universe.simulated)

    @property
    def character_ids(self) -> tuple[int, ...]:
        """The ids of the simulated characters, in creation order."""
        return tuple(self._universe.simulated)

    def character(self, character_id: int) -> Character | None:
        """Any known character (simulated or not)."""
        return self._universe.characters.get(character_id)

    def corporation(self, corporation_id: int) -> Corporation | None:
        """A corporation (player or NPC) by id."""
        return self._universe.corporations.get(corporation_id)

    def alliance(self, alliance_id: int) -> Alliance | None:
        """An alliance by id."""
        return self._universe.alliances.get(alliance_id)

    def system(self, system_id: int) -> SolarSystem | None:
        """A solar system by id."""
        return self._universe.systems.get(system_id)

    def item_type(self, type_id: int) -> TypeInfo | None:
        """An inventory type by id."""
        return self._universe.types.get(type_id)

    def item_types(self) -> tuple[TypeInfo, ...]:
        """Every inventory type of the world."""
        return tuple(self._universe.types.values())

    def systems(self) -> tuple[SolarSystem, ...]:
        """Every solar system of the world."""
        return tuple(self._universe.systems.values())

    # -- corporations and roles -------------------------------------------------------------

    def corporations(self) -> dict[int, CorporationInfo]:
        """The scenario's corporations (and any player corporation a tracked character
        was moved into), with their current directors and members."""
        with self._lock:
            corp_ids = list(self._tracked_corporations)
            chars = list(self._universe.characters.values())
            roles = dict(self._roles)
            corps = {c: self._universe.corporations[c] for c in corp_ids}
        simulated = set(self._universe.simulated)
        out: dict[int, CorporationInfo] = {}
        for corp_id, corp in corps.items():
            members = [c.character_id for c in chars if c.corporation_id == corp_id]
            out[corp_id] = CorporationInfo(
                corporation_id=corp_id,
                name=corp.name,
                ticker=corp.ticker,
                alliance_id=corp.alliance_id,
                director_ids=tuple(m for m in members if roles.get(m, Roles()).director),
                member_ids=tuple(members),
                tracked_member_ids=tuple(m for m in members if m in simulated),
                untracked_member_ids=tuple(m for m in members if m not in simulated),
            )
        return out

    def roles(self, character_id: int) -> Roles:
        """The character's corporation roles now (none unless given)."""
        with self._lock:
            return self._roles.get(character_id, Roles())

    def set_roles(
        self,
        character_id: int,
        roles: Iterable[str],
        *,
        at_base: Iterable[str] = (),
        at_hq: Iterable[str] = (),
        at_other: Iterable[str] = (),
    ) -> Roles:
        """Give a character these roles (``()``: none), effective at once; the new roles.
        ``set_roles(c, [])`` takes Director away; ``set_roles(c, ["Director"])`` grants it."""
        if character_id not in self._universe.characters:
            raise KeyError(f"unknown character {character_id}")
        lists = [tuple(dict.fromkeys(r)) for r in (roles, at_base, at_hq, at_other)]
        unknown = {r for lst in lists for r in lst} - CORPORATION_ROLES
        if unknown:
            raise ValueError(f"unknown role(s): {', '.join(sorted(unknown))}")
        new = Roles(*lists)
        with self._lock:
            self._roles[character_id] = new
        return new

    def move_character(
        self, character_id: int, corporation_id: int, *, roles: Iterable[str] = ()
    ) -> Character:
        """The character leaves its corporation for ``corporation_id`` (player or NPC), as
        in the game: its roles are dropped (``roles``: what it gets in the new one), its
        alliance is the new corporation's, kills from now on carry the new ids, and its
        old killmails stay with the old corporation. Affiliation and the corporation
        route's membership check follow at once. The moved character."""
        with self._lock:
            char = self._universe.characters.get(character_id)
            corp = self._universe.corporations.get(corporation_id)
            if char is None:
                raise KeyError(f"unknown character {character_id}")
            if corp is None:
                raise KeyError(f"unknown corporation {corporation_id}")
            moved = replace(char, corporation_id=corporation_id, alliance_id=corp.alliance_id)
            self._universe.characters[character_id] = moved
            if not corp.npc and char.simulated and corporation_id not in self._tracked_corporations:
                self._tracked_corporations.append(corporation_id)
        self.set_roles(character_id, roles)
        return moved

    @property
    def unknown_ids(self) -> tuple[int, ...]:
        """Ids used in killmails that ``/universe/names`` deliberately cannot resolve."""
        return tuple(self._universe.ghosts)

    def name(self, entity_id: int) -> tuple[str, str] | None:
        """``(name, category)`` as ``/universe/names`` reports it, None when unknown."""
        u = self._universe
        tables: tuple[tuple[Mapping[int, Any], str], ...] = (
            (u.characters, "character"),
            (u.corporations, "corporation"),
            (u.alliances, "alliance"),
            (u.factions, "faction"),
            (u.types, "inventory_type"),
            (u.systems, "solar_system"),
        )
        with self._lock:
            for table, category in tables:
                entry = table.get(entity_id)
                if entry is not None:
                    return (entry if isinstance(entry, str) else entry.name), category
        return None

    # -- numbers -------------------------------------------------------------------------

    def summary(self, now: datetime | None = None) -> WorkloadSummary:
        """The workload of a complete sync, for benchmarks' lower bounds."""
        truth = self.ground_truth(now)
        page = self.scenario.page_size
        pages = {c: max(1, math.ceil(len(rows) / page)) for c, rows in truth.items()}
        listed = {k for rows in truth.values() for k in rows}
        counts: dict[int, int] = {}
        for rows in truth.values():
            for k in rows:
                counts[k] = counts.get(k, 0) + 1
        corp_truth = self.corporation_ground_truth(now)
        corp_listed = {k for rows in corp_truth.values() for k in rows}
        corp_pages = {c: max(1, math.ceil(len(rows) / page)) for c, rows in corp_truth.items()}
        directors = {c: len(info.director_ids) for c, info in self.corporations().items()}
        per_director = [
            math.ceil(corp_pages[c] / directors[c]) for c in corp_pages if directors.get(c)
        ]
        max_per_director = max(per_director, default=0)
        max_pages = max(pages.values(), default=0)
        return WorkloadSummary(
            characters=len(truth),
            killmails_total=len(self.killmails),
            listed_killmails=len(listed),
            shared_killmails=sum(1 for n in counts.values() if n > 1),
            old_killmails=len(self.killmails) - len(listed | corp_listed),
            list_rows=sum(len(rows) for rows in truth.values()),
            list_pages=sum(pages.values()),
            max_pages_per_character=max_pages,
            max_attackers=self._max_attackers,
            min_sync_time_s=self._min_sync_time_s(
                max_pages, max_per_director, len(listed | corp_listed)
            ),
            corporations=len(corp_truth),
            corporation_killmails=len(corp_listed),
            corporation_only_killmails=len(corp_listed - listed),
            corporation_list_pages=sum(corp_pages.values()),
            max_pages_per_director=max_per_director,
            min_corporation_sync_time_s=self._min_sync_time_s(
                0, max_per_director, len(corp_listed)
            ),
        )

    def _min_sync_time_s(self, max_pages: int, max_corp_pages: int, bodies: int) -> float:
        """``max_corp_pages``: the most pages one director's bucket must serve."""
        buckets = self.scenario.buckets
        bounds = [0.0]
        if "char-killmail" in buckets:
            bounds.append(min_sync_time_s(*buckets["char-killmail"], tokens_needed=2 * max_pages))
        if "corp-killmail" in buckets:
            bounds.append(
                min_sync_time_s(*buckets["corp-killmail"], tokens_needed=2 * max_corp_pages)
            )
        if "killmail" in buckets:
            bounds.append(min_sync_time_s(*buckets["killmail"], tokens_needed=2 * bodies))
        return max(bounds)


def ids_in_body(body: Mapping[str, Any]) -> set[int]:
    """Every id in a body that ``/universe/names`` is meant to resolve (not moons/wars)."""
    keys = (
        "character_id",
        "corporation_id",
        "alliance_id",
        "faction_id",
        "ship_type_id",
        "weapon_type_id",
        "item_type_id",
    )
    found: set[int] = {int(body["solar_system_id"])}

    def walk(obj: Mapping[str, Any]) -> None:
        found.update(int(obj[k]) for k in keys if k in obj)
        for child in obj.get("items", []):
            walk(child)

    walk(body["victim"])
    for attacker in body["attackers"]:
        walk(attacker)
    return found
