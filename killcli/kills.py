"""`killsync kills`: the newest stored killmails, with names, kills and losses marked.

Fast on millions of killmails: without an owner the newest rows are read backwards from
the index on ``(killmail_time, killmail_id)``; with one, each of its two sources is read
in full from its own index (a materialized CTE) and its newest rows kept. A character's
sources: the killmails it died in (``victim_character_id``) and those it attacked in
(``killmail_attackers`` by ``(character_id, killmail_id)``); a corporation's: its losses
(``victim_corporation_id``) and its list (``corporation_killmails``). The two are
merged; then one query each reads the chosen killmails, their final blows and their
names (from the cache, never from ESI).

A killmail is a **loss** of its owner when the owner is the victim (the victim's character,
or the victim's corporation), else a **kill**.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from killcli.db import Database
from killcli.db.models import Attacker, CorporationKillmail, Killmail, table_of
from killcli.errors import UsageError
from killcli.sync.names import read_names
from killcli.universe import SystemInfo, get_systems
from killcli.values import get_values

KILLMAILS = table_of(Killmail)
ATTACKERS = table_of(Attacker)
CORPORATION_KILLMAILS = table_of(CorporationKillmail)
DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000


class Side(StrEnum):
    """What a killmail is to its owner."""

    KILL = "kill"
    LOSS = "loss"


@dataclass(frozen=True)
class Owner:
    """Whose kills and losses: one character, or one corporation."""

    character_id: int | None = None
    corporation_id: int | None = None

    def __post_init__(self) -> None:
        if (self.character_id is None) == (self.corporation_id is None):
            raise UsageError("give one of --character and --corporation, not both")

    @classmethod
    def of(cls, character_id: int | None, corporation_id: int | None) -> Owner | None:
        """The owner the options name, None when neither is given."""
        if character_id is None and corporation_id is None:
            return None
        return cls(character_id, corporation_id)

    def side(self, victim_character_id: int | None, victim_corporation_id: int | None) -> Side:
        """A loss when the owner is the victim, else a kill."""
        if self.character_id is not None:
            lost = victim_character_id == self.character_id
        else:
            lost = victim_corporation_id == self.corporation_id
        return Side.LOSS if lost else Side.KILL


@dataclass(frozen=True)
class Party:
    """One side of a kill, ids with their cached names (None: not in the name cache)."""

    character_id: int | None
    character_name: str | None
    corporation_id: int | None
    corporation_name: str | None
    ship_type_id: int | None
    ship_type_name: str | None


@dataclass(frozen=True)
class KillRow:
    """One line of `killsync kills`."""

    killmail_id: int
    killmail_time: datetime
    solar_system_id: int
    solar_system_name: str | None
    victim: Party
    final_blow: Party
    attacker_count: int
    side: Side | None  # with an owner: its kill or its loss
    #: the system's security status and region (the universe cache; None while unknown)
    security_status: float | None = None
    region_id: int | None = None
    #: its stored ISK value (``killmail_values``, :mod:`killcli.values`); None until valued
    value: dict[str, Any] | None = None


@dataclass(frozen=True)
class KillsResult:
    """The rows of `killsync kills`, newest first, and what was asked."""

    kills: list[KillRow]
    character_id: int | None
    corporation_id: int | None
    since: datetime | None
    limit: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _newest(query: Select[Any], limit: int, *, fenced: bool) -> Select[Any]:
    """``query``'s ``limit`` newest rows. ``fenced``: the query is computed first (a
    materialized CTE), so that PostgreSQL cannot walk the whole time index backwards
    looking for an owner's few killmails (it misjudges how few an owner has: a 1M-killmail
    benchmark took 0.9 s that way, 10 ms fenced)."""
    if fenced:
        rows = query.cte("owned").prefix_with("MATERIALIZED", dialect="postgresql")
        query = select(rows.c.killmail_id, rows.c.killmail_time)
        columns = rows.c
    else:
        columns = KILLMAILS.c
    order = (columns.killmail_time.desc(), columns.killmail_id.desc())
    return query.order_by(*order).limit(limit)


def _sources(owner: Owner | None) -> list[Select[Any]]:
    """The queries of ``(killmail_id, killmail_time)`` whose union is the owner's killmails."""
    base = select(KILLMAILS.c.killmail_id, KILLMAILS.c.killmail_time)
    if owner is None:
        return [base]
    if owner.character_id is not None:
        attacked = base.join(ATTACKERS, ATTACKERS.c.killmail_id == KILLMAILS.c.killmail_id)
        return [
            base.where(KILLMAILS.c.victim_character_id == owner.character_id),
            attacked.where(ATTACKERS.c.character_id == owner.character_id),
        ]
    listed = base.join(
        CORPORATION_KILLMAILS, CORPORATION_KILLMAILS.c.killmail_id == KILLMAILS.c.killmail_id
    )
    return [
        base.where(KILLMAILS.c.victim_corporation_id == owner.corporation_id),
        listed.where(CORPORATION_KILLMAILS.c.corporation_id == owner.corporation_id),
    ]


def newest_ids(
    session: Session, owner: Owner | None, since: datetime | None, limit: int
) -> list[int]:
    """The ids of the owner's ``limit`` newest killmails (everyone's without an owner)."""
    found: dict[int, datetime] = {}
    for source in _sources(owner):
        query = source if since is None else source.where(KILLMAILS.c.killmail_time >= since)
        newest = _newest(query, limit, fenced=owner is not None)
        found.update((row[0], row[1]) for row in session.execute(newest))
    order = sorted(found.items(), key=lambda pair: (pair[1], pair[0]), reverse=True)
    return [killmail_id for killmail_id, _ in order[:limit]]


def _party(names: Mapping[int, str | None], ids: Mapping[str, Any], prefix: str = "") -> Party:
    character, corporation = ids[prefix + "character_id"], ids[prefix + "corporation_id"]
    ship = ids[prefix + "ship_type_id"]
    return Party(
        character,
        names.get(character) if character is not None else None,
        corporation,
        names.get(corporation) if corporation is not None else None,
        ship,
        names.get(ship) if ship is not None else None,
    )


NO_PARTY: Mapping[str, Any] = dict.fromkeys(("character_id", "corporation_id", "ship_type_id"))


def _final_blows(session: Session, ids: list[int]) -> dict[int, Mapping[str, Any]]:
    query = select(
        ATTACKERS.c.killmail_id,
        ATTACKERS.c.character_id,
        ATTACKERS.c.corporation_id,
        ATTACKERS.c.ship_type_id,
    ).where(ATTACKERS.c.killmail_id.in_(ids), ATTACKERS.c.final_blow.is_(True))
    return {row["killmail_id"]: dict(row) for row in session.execute(query).mappings()}


def _ids_to_name(rows: Iterable[Mapping[str, Any]], blows: Iterable[Mapping[str, Any]]) -> set[int]:
    keys = (
        "solar_system_id",
        "victim_character_id",
        "victim_corporation_id",
        "victim_ship_type_id",
    )
    wanted = {row[key] for row in rows for key in keys}
    wanted |= {b[key] for b in blows for key in ("character_id", "corporation_id", "ship_type_id")}
    return {i for i in wanted if i is not None}


def _place(system: SystemInfo | None) -> tuple[float | None, int | None]:
    return (None, None) if system is None else (system.security_status, system.region_id)


def list_kills(
    db: Database,
    *,
    owner: Owner | None = None,
    since: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> KillsResult:
    """The newest stored killmails (the owner's, when given), with names from the cache."""
    with db.session() as session:
        ids = newest_ids(session, owner, since, limit)
        query = select(KILLMAILS).where(KILLMAILS.c.killmail_id.in_(ids))
        rows = [dict(row) for row in session.execute(query).mappings()] if ids else []
        blows = _final_blows(session, ids) if ids else {}
        values = get_values(session, ids) if ids else {}
        systems = get_systems(session, {row["solar_system_id"] for row in rows})
    names = read_names(db, _ids_to_name(rows, blows.values()))
    by_id = {row["killmail_id"]: row for row in rows}
    kills = []
    for killmail_id in ids:
        row = by_id[killmail_id]
        kills.append(
            KillRow(
                killmail_id,
                row["killmail_time"],
                row["solar_system_id"],
                names.get(row["solar_system_id"]),
                _party(names, row, "victim_"),
                _party(names, blows.get(killmail_id, NO_PARTY)),
                row["attacker_count"],
                None
                if owner is None
                else owner.side(row["victim_character_id"], row["victim_corporation_id"]),
                *_place(systems.get(row["solar_system_id"])),
                value=values[killmail_id].as_dict() if killmail_id in values else None,
            )
        )
    return KillsResult(
        kills,
        owner.character_id if owner else None,
        owner.corporation_id if owner else None,
        since,
        limit,
    )
