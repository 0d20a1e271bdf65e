"""Names for the ids in killmails, cached in the database so no id is asked for twice.

Unknown ids (ESI answers 404 for them) are cached too, with a time after which they may be
asked again. The syncs of a process that resolve names at the same moment share one cache
read, one ESI lookup and one write (:mod:`killcli.coalesce`), so no id is asked for twice
at once, and 32 syncs do not queue behind one another's round trips (a process-wide lock
held across the ESI call made each sync with new killmails wait ~2 s).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select

from killcli.coalesce import Coalescer
from killcli.db import Database
from killcli.db.models import Name, table_of
from killcli.db.store import dialect_insert
from killcli.db.types import utcnow
from killcli.errors import EsiError
from killcli.esi.names import NamesApi, fetch_names
from killcli.killmail import KillmailRows

NAMES = table_of(Name)
UNKNOWN_RETRY = timedelta(days=1)
READ_CHUNK = 500
PARTY_KEYS = ("character_id", "corporation_id", "alliance_id", "faction_id")


def ids_to_name(rows: KillmailRows) -> set[int]:
    """Characters, corporations, alliances, factions, ship/weapon/item types and the system."""
    km = rows.killmail
    ids = {km["solar_system_id"], km["victim_ship_type_id"]}
    ids.update(km[f"victim_{key}"] for key in PARTY_KEYS)
    for attacker in rows.attackers:
        ids.update(attacker[key] for key in (*PARTY_KEYS, "ship_type_id", "weapon_type_id"))
    ids.update(item["item_type_id"] for item in rows.items)
    ids.discard(None)
    return ids


def read_names(
    db: Database, ids: Iterable[int | None], *, now: datetime | None = None
) -> dict[int, str | None]:
    """What the cache holds for ``ids`` (no ESI call): a name, or None for an id ESI could
    not resolve. With ``now``, unresolved ids whose retry time has passed are left out
    (the resolver asks ESI for them again); without it every cached row is returned."""
    wanted = list({i for i in ids if i is not None})
    found: dict[int, str | None] = {}
    with db.session() as session:
        for start in range(0, len(wanted), READ_CHUNK):
            query = select(NAMES.c.id, NAMES.c.name).where(
                NAMES.c.id.in_(wanted[start : start + READ_CHUNK])
            )
            if now is not None:
                query = query.where(or_(NAMES.c.retry_after.is_(None), NAMES.c.retry_after > now))
            found.update({row.id: row.name for row in session.execute(query)})
    return found


class NameResolver:
    """Resolve ids through the cache, asking ESI only for what it has never answered."""

    def __init__(self, db: Database, esi: NamesApi) -> None:
        self._db = db
        self._esi = esi
        self._batches: Coalescer[frozenset[int], tuple[dict[int, str | None], int]] = Coalescer(
            self._resolve_many
        )

    def cached(self, ids: Iterable[int]) -> dict[int, str | None]:
        """Names the cache knows (None for ids ESI could not resolve, still within retry)."""
        return read_names(self._db, ids, now=utcnow())

    def resolve(self, ids: Iterable[int]) -> tuple[dict[int, str | None], int]:
        """All names for ``ids`` and how many ESI resolved now. ESI errors leave gaps."""
        return self._batches.submit(frozenset(ids))

    def _resolve_many(
        self, batches: Sequence[frozenset[int]]
    ) -> list[tuple[dict[int, str | None], int]]:
        """One cache read, one ESI lookup and one write for every sync asking now."""
        wanted = frozenset().union(*batches)
        known = self.cached(wanted)
        missing = sorted(wanted - known.keys())
        fresh: set[int] = set()
        if missing:
            try:
                result = fetch_names(self._esi, missing)
            except EsiError:
                result = None  # names are decoration: the next batch or run asks again
            if result is not None:
                self._store(result.names, result.unknown_ids)
                known.update({n.id: n.name for n in result.names})
                known.update(dict.fromkeys(result.unknown_ids))
                fresh = {n.id for n in result.names}
        return [({i: known[i] for i in ids if i in known}, len(ids & fresh)) for ids in batches]

    def _store(self, names: Iterable[Any], unknown: Iterable[int]) -> None:
        now = utcnow()
        rows = [
            {
                "id": n.id,
                "name": n.name,
                "category": n.category,
                "fetched_at": now,
                "retry_after": None,
            }
            for n in names
        ]
        rows += [
            {
                "id": i,
                "name": None,
                "category": None,
                "fetched_at": now,
                "retry_after": now + UNKNOWN_RETRY,
            }
            for i in unknown
        ]
        if not rows:
            return
        with self._db.session() as session:
            stmt = dialect_insert(session, NAMES)
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[NAMES.c.id],
                    set_={
                        k: stmt.excluded[k]
                        for k in ("name", "category", "fetched_at", "retry_after")
                    },
                ),
                rows,
            )
