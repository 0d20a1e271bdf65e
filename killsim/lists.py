"""The cache in front of each character's (or corporation's) recent-killmails list.

ESI serves a list from a cache refreshed every ``list_cache_s``: new kills appear only
when it refreshes, and every page of one version shares ``Last-Modified``. A
corporation's list has one cache, whichever director asks (so rotating directors
mid-walk sees one version).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from killsim.clock import Clock
from killsim.world import World


@dataclass(frozen=True)
class ListVersion:
    """One cached version of a character's list."""

    rows: tuple[tuple[int, str], ...]
    last_modified: datetime
    expires: datetime
    built_at_s: float
    page_size: int

    @property
    def pages(self) -> int:
        """The ``X-Pages`` value of this version."""
        return max(1, math.ceil(len(self.rows) / self.page_size))

    def page(self, number: int) -> list[dict[str, int | str]]:
        """The rows of one page (1-based)."""
        start = (number - 1) * self.page_size
        return [
            {"killmail_hash": h, "killmail_id": k}
            for k, h in self.rows[start : start + self.page_size]
        ]

    def etag(self, number: int) -> str:
        """Quoted; changes when the page's rows or the page count change."""
        text = f"{self.pages}|" + ",".join(
            f"{k}:{h}"
            for k, h in self.rows[(number - 1) * self.page_size : number * self.page_size]
        )
        return '"' + hashlib.sha256(text.encode()).hexdigest()[:40] + '"'


class ListCache:
    """Per-owner list versions (thread-safe): characters' lists, or with
    ``rows=world.corporation_recent`` corporations' lists."""

    def __init__(
        self,
        world: World,
        clock: Clock,
        cache_s: int,
        page_size: int,
        rows: Callable[[int], list[tuple[int, str]]] | None = None,
    ) -> None:
        self._rows = rows or world.recent
        self._clock = clock
        self._cache_s = cache_s
        self._page_size = page_size
        self._lock = threading.Lock()
        self._versions: dict[int, ListVersion] = {}

    def get(self, character_id: int) -> ListVersion:
        """The current version, rebuilt when the cache has expired."""
        now_s = self._clock.monotonic()
        with self._lock:
            version = self._versions.get(character_id)
            if version is None or now_s >= version.built_at_s + self._cache_s:
                version = self._build(character_id, version)
            return version

    def refresh(self, character_id: int) -> None:
        """Rebuild now, whatever the cache time (``Last-Modified`` moves on)."""
        with self._lock:
            self._build(character_id, self._versions.get(character_id))

    def _build(self, character_id: int, previous: ListVersion | None) -> ListVersion:
        now = self._clock.now().replace(microsecond=0)
        if previous is not None and now <= previous.last_modified:
            # HTTP dates have one-second resolution: a new version must show a new date.
            now = previous.last_modified + timedelta(seconds=1)
        version = ListVersion(
            rows=tuple(self._rows(character_id)),
            last_modified=now,
            expires=now + timedelta(seconds=self._cache_s),
            built_at_s=self._clock.monotonic(),
            page_size=self._page_size,
        )
        self._versions[character_id] = version
        return version
