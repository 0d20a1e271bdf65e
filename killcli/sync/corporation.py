"""Sync one corporation's killmails through its directors' tokens.

The corporation's list is walked like a character's (:func:`~killcli.sync.listwalk.
walk_killmail_list`) and its bodies take the engine's one path (plan, claims, fetch,
save), so a body a character sync has or is fetching is never fetched again. What is
particular is whose token reads each page (:class:`DirectorRotation`):

* the usable directors, least recently used first, their roles re-checked first when
  ESI's answer expired (:meth:`Corporations.usable_directors`): a corporation without one
  costs no request at all (:class:`~killcli.errors.NoDirector`);
* each page goes with the first director whose ``corp-killmail`` bucket (30 tokens / 15
  min, one per director) can pay now, so a walk longer than one bucket moves on to the
  next director instead of waiting; when every bucket is dry, the one that refills first;
* a 401/403 is decided by a new roles check (:meth:`Corporations.record_forbidden`), not
  its wording, and that director is not used again in the run (nor after, until its check
  expires); the page goes with the next director.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from killcli.corporations import Corporations, require_enabled_corporation
from killcli.db import Database
from killcli.errors import EsiHttpError, NeedsLogin, NoDirector
from killcli.esi.client import corporation_killmails_path
from killcli.esi.models import ListPageResult
from killcli.esi.ratelimit import RateLimiter
from killcli.esi.routes import route_of
from killcli.sync.engine import SyncEngine, SyncFigures, SyncOptions, SyncProgress, run_record
from killcli.sync.owners import CorporationOwner

CORP_GROUP = "corp-killmail"


@dataclass(frozen=True)
class CorporationSyncResult:
    """One corporation sync, as `sync-corporation --json` prints it."""

    corporation_id: int
    corporation_name: str
    status: str  # ok | not_modified | cached | partial
    figures: SyncFigures
    directors_used: tuple[int, ...] = ()
    directors_dropped: tuple[int, ...] = ()  # answered 403 in this run: not used again
    pending_reasons: tuple[str, ...] = ()
    new_killmail_ids: tuple[int, ...] = ()

    @property
    def owner_name(self) -> str:
        return self.corporation_name

    def as_dict(self) -> dict[str, Any]:
        return run_record(self)


@dataclass
class DirectorRotation:
    """Reads pages of one corporation's list, each with the best director's token now."""

    engine: SyncEngine
    corporations: Corporations
    corporation_id: int
    directors: list[int]  # usable, least recently used first; shrinks on 403s
    used: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def __call__(self, page: int, etag: str | None, *, conditional: bool) -> ListPageResult:
        while True:
            director = self._choose()
            try:
                token = self.engine.tokens.access_token(director)
                result = self.engine.esi.fetch_corporation_killmail_list_page(
                    self.corporation_id, director, token, page, etag, conditional=conditional
                )
            except NeedsLogin:  # the character's grant is gone: its sync says so
                self._drop(director)
                continue
            except EsiHttpError as exc:
                if exc.status not in (401, 403):
                    raise
                self.corporations.record_forbidden(director, self.corporation_id, exc.detail)
                self._drop(director)
                continue
            self._note_used(director)
            return result

    def ready_in_s(self) -> float:
        """How long the next page would wait: the soonest of the directors' buckets."""
        limiter = self.engine.esi.limiter
        if limiter is None or not self.directors:
            return 0.0
        return min(self._waits(limiter))

    def _waits(self, limiter: RateLimiter) -> list[float]:
        route = route_of(corporation_killmails_path(self.corporation_id))
        return [limiter.ready_in_s(route, d, CORP_GROUP) for d in self.directors]

    def _choose(self) -> int:
        """The first director (LRU order) whose bucket can pay now, else the one whose
        bucket refills first; :class:`NoDirector` when none is left."""
        if not self.directors:
            raise NoDirector(
                f"corporation {self.corporation_id}: no director with a usable token left",
                corporation_id=self.corporation_id,
            )
        limiter = self.engine.esi.limiter
        if limiter is None or len(self.directors) == 1:
            return self.directors[0]
        waits = self._waits(limiter)
        return self.directors[waits.index(min(waits))]

    def _drop(self, director: int) -> None:
        self.directors.remove(director)
        self.dropped.append(director)

    def _note_used(self, director: int) -> None:
        if director not in self.used:
            self.used.append(director)
            self.corporations.mark_used(director)


def sync_corporation(
    engine: SyncEngine,
    corporations: Corporations,
    corporation_id: int,
    options: SyncOptions | None = None,
    progress: SyncProgress | None = None,
) -> CorporationSyncResult:
    """Sync one tracked, enabled corporation now; :class:`NoDirector` (before any request
    to its list) when none of its directors may read it."""
    owner = _load(engine.db, corporation_id)
    directors = corporations.usable_directors(corporation_id)
    if not directors:
        raise NoDirector(
            f"corporation {corporation_id} ({owner.name}) has no director with a usable token",
            corporation_id=corporation_id,
        )
    rotation = DirectorRotation(engine, corporations, corporation_id, directors)
    run, status = engine.sync_list(owner, rotation, options, progress)
    return CorporationSyncResult(
        corporation_id,
        owner.name,
        status,
        run.figures,
        tuple(rotation.used),
        tuple(rotation.dropped),
        tuple(run.pending_reasons),
        tuple(run.new_ids),
    )


def _load(db: Database, corporation_id: int) -> CorporationOwner:
    with db.session() as session:
        return CorporationOwner.of(require_enabled_corporation(session, corporation_id))
