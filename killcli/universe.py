"""What a type and a solar system are: type -> group -> category, system ->
constellation -> region and the system's security status, cached in the database.

The API, for the valuation and anyone filtering killmails by region or ship group::

    get_types(session, type_ids)      -> {type_id: TypeInfo}     (the cache only)
    get_systems(session, system_ids)  -> {system_id: SystemInfo} (the cache only)
    fetch_types(db, esi, type_ids)    -> {type_id: TypeInfo}     (asks ESI for what is missing)
    fetch_systems(db, esi, system_ids) -> {system_id: SystemInfo}

``get_*`` never talk to ESI: an id the cache does not hold is left out (a known id whose
group or constellation ESI did not know has ``None`` there). ``fetch_*`` first read the
cache, then ask ESI for the rest (``/universe/types``, ``/groups``, ``/systems``,
``/constellations``, a few at once), store what they learn and return everything. Ids ESI
answers 404 for are cached too and asked again only after a day, like names
(:mod:`killcli.sync.names`). Static data barely changes: cached rows are kept until an
operator deletes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import Table, or_, select
from sqlalchemy.orm import Session

from killcli.db import Database
from killcli.db.models import (
    UniverseConstellation,
    UniverseGroup,
    UniverseSystem,
    UniverseType,
    table_of,
)
from killcli.db.store import dialect_insert
from killcli.db.types import utcnow
from killcli.errors import EsiHttpError
from killcli.esi.market import Requester, UniverseRecord, fetch_universe

TYPES = table_of(UniverseType)
GROUPS = table_of(UniverseGroup)
SYSTEMS = table_of(UniverseSystem)
CONSTELLATIONS = table_of(UniverseConstellation)
UNKNOWN_RETRY = timedelta(days=1)
READ_CHUNK = 500
FETCH_THREADS = 8
#: kind -> (table, its id column, its parent column)
_CACHES: dict[str, tuple[Table, str, str]] = {
    "type": (TYPES, "type_id", "group_id"),
    "group": (GROUPS, "group_id", "category_id"),
    "system": (SYSTEMS, "system_id", "constellation_id"),
    "constellation": (CONSTELLATIONS, "constellation_id", "region_id"),
}
SKIN_CATEGORY = 91
CAPSULE_GROUP = 29


@dataclass(frozen=True)
class TypeInfo:
    """An inventory type: its group and category (``None`` where ESI did not know)."""

    type_id: int
    name: str | None
    group_id: int | None
    category_id: int | None

    @property
    def is_skin(self) -> bool:
        return self.category_id == SKIN_CATEGORY

    @property
    def is_capsule(self) -> bool:
        return self.group_id == CAPSULE_GROUP


@dataclass(frozen=True)
class SystemInfo:
    """A solar system: its constellation, region and security status."""

    system_id: int
    name: str | None
    constellation_id: int | None
    region_id: int | None
    security_status: float | None


# -- the cache --------------------------------------------------------------------------


def _cached(session: Session, kind: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Rows of one cache by id: known ids, and unknown ones still within their retry."""
    table, key, _ = _CACHES[kind]
    wanted = sorted(set(ids))
    now = utcnow()
    found: dict[int, dict[str, Any]] = {}
    for start in range(0, len(wanted), READ_CHUNK):
        query = select(table).where(
            table.c[key].in_(wanted[start : start + READ_CHUNK]),
            or_(table.c.retry_after.is_(None), table.c.retry_after > now),
        )
        found.update({row[key]: dict(row) for row in session.execute(query).mappings()})
    return found


def get_types(session: Session, type_ids: Iterable[int]) -> dict[int, TypeInfo]:
    """The cached types among ``type_ids`` with their group and category."""
    types = _cached(session, "type", type_ids)
    group_ids = {row["group_id"] for row in types.values() if row["group_id"] is not None}
    groups = _cached(session, "group", group_ids)
    out = {}
    for type_id, row in types.items():
        group = groups.get(row["group_id"]) if row["group_id"] is not None else None
        category = None if group is None else group["category_id"]
        out[type_id] = TypeInfo(type_id, row["name"], row["group_id"], category)
    return out


def get_systems(session: Session, system_ids: Iterable[int]) -> dict[int, SystemInfo]:
    """The cached systems among ``system_ids`` with their region and security status."""
    systems = _cached(session, "system", system_ids)
    parents = {r["constellation_id"] for r in systems.values() if r["constellation_id"]}
    constellations = _cached(session, "constellation", parents)
    out = {}
    for system_id, row in systems.items():
        parent = constellations.get(row["constellation_id"])
        out[system_id] = SystemInfo(
            system_id,
            row["name"],
            row["constellation_id"],
            None if parent is None else parent["region_id"],
            row["security_status"],
        )
    return out


# -- filling it from ESI -----------------------------------------------------------------


def fetch_types(db: Database, esi: Requester, type_ids: Iterable[int]) -> dict[int, TypeInfo]:
    """Every type of ``type_ids`` (ids ESI does not know are left out), asking ESI for
    the types and groups the cache lacks."""
    wanted = set(type_ids)
    _fill(db, esi, "type", wanted)
    with db.session() as session:
        groups = {t.group_id for t in get_types(session, wanted).values() if t.group_id}
    _fill(db, esi, "group", groups)
    with db.session() as session:
        return {k: v for k, v in get_types(session, wanted).items() if v.group_id is not None}


def fetch_systems(db: Database, esi: Requester, system_ids: Iterable[int]) -> dict[int, SystemInfo]:
    """Every system of ``system_ids`` (ids ESI does not know are left out), asking ESI
    for the systems and constellations the cache lacks."""
    wanted = set(system_ids)
    _fill(db, esi, "system", wanted)
    with db.session() as session:
        parents = {s.constellation_id for s in get_systems(session, wanted).values()}
    _fill(db, esi, "constellation", {p for p in parents if p is not None})
    with db.session() as session:
        found = get_systems(session, wanted)
    return {k: v for k, v in found.items() if v.constellation_id is not None}


def _fill(db: Database, esi: Requester, kind: str, ids: set[int]) -> None:
    """Ask ESI for the ids of one kind the cache lacks; store answers and 404s."""
    with db.session() as session:
        missing = sorted(ids - _cached(session, kind, ids).keys())
    if not missing:
        return
    with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(missing))) as pool:
        answers = list(pool.map(partial(_lookup, esi, kind), missing))
    _store(db, kind, answers)


def _lookup(esi: Requester, kind: str, entity_id: int) -> UniverseRecord | int:
    """The record, or the id itself when ESI does not know it (404)."""
    try:
        return fetch_universe(esi, kind, entity_id)
    except EsiHttpError as exc:
        if exc.status != 404:
            raise
        return entity_id


def _store(db: Database, kind: str, answers: list[UniverseRecord | int]) -> None:
    table, key, parent = _CACHES[kind]
    now = utcnow()
    rows = []
    for answer in answers:
        known = isinstance(answer, UniverseRecord)
        row: dict[str, Any] = {
            key: answer.id if isinstance(answer, UniverseRecord) else answer,
            parent: answer.parent_id if isinstance(answer, UniverseRecord) else None,
            "name": answer.name if isinstance(answer, UniverseRecord) else None,
            "fetched_at": now,
            "retry_after": None if known else now + UNKNOWN_RETRY,
        }
        if kind == "system":
            row["security_status"] = (
                answer.security_status if isinstance(answer, UniverseRecord) else None
            )
        rows.append(row)
    with db.session() as session:
        stmt = dialect_insert(session, table)
        columns = [c for c in rows[0] if c != key]
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c[key]], set_={c: stmt.excluded[c] for c in columns}
            ),
            rows,
        )
