"""The simulated world: who exists, which kills happened, who received them.

Thread-safe: ESI handler threads read it while a test adds kills. Bodies are rendered
once to ESI's exact bytes; :meth:`World.body` hands out a fresh copy each time.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
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
from killsim.plan import KillPlanner, Sides, plan_world_kills, recipients
from killsim.scenario import Scenario, min_sync_time_s


@dataclass(frozen=True)
class WorkloadSummary:
    """What a complete sync of every simulated character has to fetch, right now.

    ``min_sync_time_s`` is a lower bound for one client IP and application, from the
    scenario's buckets alone (no latency): every list page and body fetched once.
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
        self._bodies = BodyMaker(scenario.seed, self._universe.types)
        self._records: dict[int, KillmailRecord] = {}
        self._bytes: dict[int, bytes] = {}
        self._by_character: dict[int, list[int]] = {c: [] for c in self._universe.simulated}
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
        )
        with self._lock:
            self._records[record.killmail_id] = record
            self._bytes[record.killmail_id] = data
            for char_id in record.recipients:
                self._by_character[char_id].append(record.killmail_id)
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
        cutoff = (now or self._clock.now()) - timedelta(days=HISTORY_DAYS)
        with self._lock:
            records = [self._records[k] for k in self._by_character.get(character_id, [])]
        rows = [r for r in records if r.killmail_time >= cutoff]
        rows.sort(key=lambda r: (r.killmail_time, r.killmail_id), reverse=True)
        return [(r.killmail_id, r.killmail_hash) for r in rows]

    def ground_truth(self, now: datetime | None = None) -> dict[int, dict[int, str]]:
        """``{character_id: {killmail_id: hash}}``: what a complete sync stores, once every
        list cache has refreshed (kills added at runtime included)."""
        return {char_id: dict(self.recent(char_id, now)) for char_id in self._universe.simulated}

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
        return WorkloadSummary(
            characters=len(truth),
            killmails_total=len(self.killmails),
            listed_killmails=len(listed),
            shared_killmails=sum(1 for n in counts.values() if n > 1),
            old_killmails=len(self.killmails) - len(listed),
            list_rows=sum(len(rows) for rows in truth.values()),
            list_pages=sum(pages.values()),
            max_pages_per_character=max(pages.values(), default=0),
            max_attackers=self._max_attackers,
            min_sync_time_s=self._min_sync_time_s(max(pages.values(), default=0), len(listed)),
        )

    def _min_sync_time_s(self, max_pages: int, bodies: int) -> float:
        buckets = self.scenario.buckets
        bounds = [0.0]
        if "char-killmail" in buckets:
            bounds.append(min_sync_time_s(*buckets["char-killmail"], tokens_needed=2 * max_pages))
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
