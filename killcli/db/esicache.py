"""The database-backed ETag store: conditional requests survive restarts and hosts."""

from __future__ import annotations

from killcli.db.engine import Database
from killcli.db.models import EsiCacheEntry, table_of
from killcli.db.store import dialect_insert
from killcli.db.types import utcnow
from killcli.esi.etag import CacheEntry

ESI_CACHE = table_of(EsiCacheEntry)


class DbEtagStore:
    """An ``EtagStore`` over the ``esi_cache`` table (thread-safe: a session per call)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, url: str) -> CacheEntry | None:
        with self._db.session() as session:
            row = session.get(EsiCacheEntry, url)
            if row is None:
                return None
            return CacheEntry(row.etag, row.expires_at, row.last_modified)

    def put(self, url: str, entry: CacheEntry) -> None:
        values = {
            "url": url,
            "etag": entry.etag,
            "expires_at": entry.expires_at,
            "last_modified": entry.last_modified,
            "updated_at": utcnow(),
        }
        with self._db.session() as session:
            stmt = dialect_insert(session, ESI_CACHE).values(values)
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[ESI_CACHE.c.url],
                    set_={k: stmt.excluded[k] for k in values if k != "url"},
                )
            )
