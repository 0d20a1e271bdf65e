"""ETags and ``Expires`` per URL: conditional requests and "may I ask again yet?".

ESI answers ``If-None-Match`` with a 304 (1 token instead of 2) when nothing changed. The
ETag is kept after its copy expires and sent back unchanged. Asking before ``Expires`` is
circumventing the cache, which CCP may ban for: :func:`may_fetch` is the check.

:class:`EtagStore` is the seam: :class:`MemoryEtagStore` here, a database-backed store in
``killcli.db``. Keys are full URLs with their query (``...?page=2``); URLs never carry
tokens.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class CacheEntry:
    """What ESI said about one URL the last time it answered 200 or 304."""

    etag: str | None
    expires_at: datetime | None
    last_modified: datetime | None


class EtagStore(Protocol):
    """Where the client keeps a :class:`CacheEntry` per URL (must be thread-safe)."""

    def get(self, url: str) -> CacheEntry | None: ...

    def put(self, url: str, entry: CacheEntry) -> None: ...


class MemoryEtagStore:
    """A thread-safe in-process :class:`EtagStore` (lost when the process ends)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, CacheEntry] = {}

    def get(self, url: str) -> CacheEntry | None:
        with self._lock:
            return self._entries.get(url)

    def put(self, url: str, entry: CacheEntry) -> None:
        with self._lock:
            self._entries[url] = entry

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def may_fetch(entry: CacheEntry | None, now: datetime, *, force: bool = False) -> bool:
    """True when the URL may be asked again: forced, never seen, or its copy has expired."""
    if force or entry is None or entry.expires_at is None:
        return True
    return entry.expires_at <= now
