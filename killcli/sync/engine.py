"""Sync one character's killmails from ESI: every killmail, once, as fast as ESI allows.

1. Walk the recent list: page 1 with ``If-None-Match`` (a 304 costs one token and ends the
   walk), then pages to ``X-Pages``; stop at the first page whose killmails this character
   already has (``full`` walks everything; so does a walk with no ETag stored: the last
   one did not end, and may have linked its newest pages only). A refresh mid-walk
   restarts it.
2. Plan: link what the database already holds, drop what another sync in this process is
   fetching right now (and wait for its outcome), add pending bodies that are due.
3. Fetch bodies newest first on the process's body threads, through the client's limiter,
   claiming them in the database a block at a time as the threads get to them (on a
   body thread: a sync waiting behind others claims nothing; :mod:`killcli.sync.claims`);
   what is not claimed yet (all of it behind others, else the rest of a long plan) is
   published as wants, which a worker of another egress with budget to spare may fetch first
   (:mod:`killcli.sync.helping`). What another worker has claimed is not fetched but
   waited for, once this sync's own bodies are done, and linked when it lands.
   The threads serve the oldest running sync first and hold a bounded number of bodies
   per sync (:mod:`killcli.sync.fetcher`), so memory does not grow with a list's length.
4. Save in batches, one transaction each: killmails, links, pending rows cleared, one
   ``killmail.saved`` outbox event per new killmail. A body that fails becomes pending with
   its reason and a jittered backoff (:mod:`killcli.backoff`), and is retried on later runs
   even when the list answers 304.
5. Only then store the list's ETag and expiry, so a crash never hides a killmail behind a 304
   (the old ETag is cleared before the first link of a changed list, so a crash never hides
   one behind a page of linked killmails either).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select

from killcli.accounts import KILLMAIL_SCOPE, require_character
from killcli.backoff import Backoff
from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.db import Database
from killcli.db.models import (
    Character,
    CharacterKillmail,
    CharacterStatus,
    PendingKillmail,
    SyncRun,
    table_of,
)
from killcli.db.store import SaveResult, dialect_insert, existing_killmail_ids, save_killmails
from killcli.errors import EsiError, NeedsLogin, UsageError
from killcli.esi.client import EsiClient, character_killmails_path
from killcli.esi.models import KillmailRef, ListPageResult
from killcli.esi.routes import route_of
from killcli.killmail import KillmailError, KillmailRows, parse_killmail
from killcli.sync.claims import WANTS, BodyClaims, ClaimSet, delete_wants, released_as_pending
from killcli.sync.events import killmail_saved_events, save_events
from killcli.sync.fetcher import BodyFetcher, Fetched, FetcherClosed
from killcli.sync.inflight import Claim, InflightBodies
from killcli.sync.listwalk import PacedPageFetcher, PageFetcher, walk_killmail_list
from killcli.sync.names import NameResolver, ids_to_name
from killcli.sync.owners import CharacterOwner, ListOwner, RunOutcome
from killcli.universe import fetch_systems, fetch_types, get_systems, get_types
from killcli.values import SaveTimeValuer

logger = logging.getLogger(__name__)
PENDING = table_of(PendingKillmail)
CHARACTERS = table_of(Character)
RUNS = table_of(SyncRun)
LINKS = table_of(CharacterKillmail)
PENDING_BACKOFF = Backoff(initial_s=300.0, cap_s=86_400.0)  # a body's retries: 5 min .. 1 day
DEFAULT_BODY_THREADS = 16
CLAIM_POLL_S = 0.5  # how often a sync looks for bodies another worker is fetching
# A walk whose next page would wait this long for its list's bucket first fetches and saves
# the bodies of the pages it read (a corporation's list outgrows its directors' buckets).
SAVE_WHILE_WAITING_S = 1.0


class TokenProvider(Protocol):
    """A valid access token for a character, refreshed if needed; NeedsLogin when gone."""

    def access_token(self, character_id: int) -> str: ...


class SyncProgress(Protocol):
    """What a sync reports while it runs (:mod:`killcli.sync.progress` keeps it for the
    bars and the worker's live view). Called on the sync's own thread."""

    def started(self, character_name: str) -> None: ...

    def pages(self, read: int, total: int) -> None: ...

    def bodies(self, done: int, total: int) -> None: ...

    def saving(self, killmails: int) -> None: ...


class _NoProgress:
    def started(self, character_name: str) -> None:
        pass

    def pages(self, read: int, total: int) -> None:
        pass

    def bodies(self, done: int, total: int) -> None:
        pass

    def saving(self, killmails: int) -> None:
        pass


@dataclass(frozen=True)
class SyncOptions:
    full: bool = False  # walk every page instead of stopping at known killmails
    force: bool = False  # fetch the list even before its cache expires
    batch_size: int = 100


@dataclass
class SyncFigures:
    """Per-run figures, stored on the sync run and printed by `sync-user --json`."""

    pages: int = 0
    not_modified: int = 0
    list_restarts: int = 0
    found: int = 0
    new: int = 0
    already: int = 0
    linked: int = 0
    fetched: int = 0
    shared_inflight: int = 0  # fetched by another sync of this process
    shared_elsewhere: int = 0  # claimed by another worker of this database
    claims_taken_over: int = 0  # of those, claims that lapsed and were taken over
    pending: int = 0
    pending_retried: int = 0
    names_resolved: int = 0
    skipped_cache: bool = False
    tokens: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def spend(self, bucket: str, tokens: int) -> None:
        self.tokens[bucket] = self.tokens.get(bucket, 0) + tokens


@dataclass(frozen=True)
class SyncResult:
    character_id: int
    character_name: str
    status: str  # ok | not_modified | cached | partial
    figures: SyncFigures
    pending_reasons: tuple[str, ...] = ()
    new_killmail_ids: tuple[int, ...] = ()

    @property
    def owner_name(self) -> str:
        return self.character_name

    def as_dict(self) -> dict[str, Any]:
        return run_record(self)


def run_record(result: Any) -> dict[str, Any]:
    """A sync result dataclass as its `--json` run record (at most 1000 new ids)."""
    data: dict[str, Any] = asdict(result)
    data["new_killmail_ids"] = list(result.new_killmail_ids)[:1000]
    return data


@dataclass
class _Run:
    """Mutable state of one sync while it runs."""

    owner: ListOwner  # whose list: a character's, or a corporation's
    options: SyncOptions
    claims: ClaimSet  # its claims in the database, released as bodies are settled
    fetch_page: PageFetcher  # one page of the owner's list (a token, or directors in turn)
    figures: SyncFigures = field(default_factory=SyncFigures)
    new_ids: list[int] = field(default_factory=list)
    pending: dict[int, str] = field(default_factory=dict)  # killmail id -> reason
    first_page: ListPageResult | None = None  # page 1, fetched before the sync began
    withhold_etag: bool = False  # a body went pending on another owner's row: store no ETag
    etag_forgotten: bool = False  # this walk cleared the list's ETag before linking
    read: list[KillmailRef] = field(default_factory=list)  # listed on the pages read so far
    flushed: set[int] = field(default_factory=set)  # saved while the walk waited

    @property
    def pending_reasons(self) -> list[str]:
        return [f"{kid}: {reason}" for kid, reason in self.pending.items()]


@dataclass
class CharacterPages:
    """Pages of a character's list with its token (asked for once, by the first request)."""

    engine: SyncEngine
    character_id: int
    token: str | None = None

    def __call__(self, page: int, etag: str | None, *, conditional: bool) -> ListPageResult:
        if self.token is None:
            self.token = self.engine.tokens.access_token(self.character_id)
        return self.engine.esi.fetch_killmail_list_page(
            self.character_id, self.token, page, etag=etag, conditional=conditional
        )

    def ready_in_s(self) -> float:
        limiter = self.engine.esi.limiter
        if limiter is None:
            return 0.0
        route = route_of(character_killmails_path(self.character_id))
        return limiter.ready_in_s(route, self.character_id)


class SyncEngine:
    """Shared by every sync of a process: one ESI client, one body fetcher, one registry,
    one owner of body claims in the database."""

    def __init__(
        self,
        db: Database,
        esi: EsiClient,
        tokens: TokenProvider,
        *,
        body_threads: int = DEFAULT_BODY_THREADS,
        inflight: InflightBodies | None = None,
        claims: BodyClaims | None = None,
        egress: str | None = None,
        claim_poll_s: float = CLAIM_POLL_S,
        clock: Clock = SYSTEM_CLOCK,
        valuer: SaveTimeValuer | None = None,
    ) -> None:
        self.db = db
        self.valuer = valuer  # values new killmails whose prices are stored
        self.esi = esi
        self.tokens = tokens
        self.inflight = inflight or InflightBodies()
        self.claims = claims or BodyClaims(db, egress=egress, clock=clock)
        self._claim_poll_s = claim_poll_s
        self._closed = threading.Event()  # wakes syncs waiting for other workers' bodies
        # One sync may use every thread; twice that leaves room for a save pause.
        self.fetcher: BodyFetcher[KillmailRef, KillmailRows] = BodyFetcher(
            self._fetch_body, threads=body_threads, per_stream=2 * body_threads
        )
        self.names = NameResolver(db, esi)
        self._universe_lock = threading.Lock()
        self._clock = clock

    def close(self) -> None:
        """Stop the body threads (after the fetches they are running) and the claims'
        heartbeat."""
        self._closed.set()
        self.fetcher.close()
        self.claims.close()

    # -- entry point --------------------------------------------------------------------

    def sync_character(
        self,
        character_id: int,
        options: SyncOptions | None = None,
        progress: SyncProgress | None = None,
        *,
        first_page: ListPageResult | None = None,
    ) -> SyncResult:
        """``first_page``: the list's page 1 already fetched (a 200, by the worker's quick
        try, :mod:`killcli.sync.quick`), used instead of asking for it again."""
        character = self._load_character(character_id)
        fetch = CharacterPages(self, character_id)
        run, status = self.sync_list(
            CharacterOwner.of(character), fetch, options, progress, first_page=first_page
        )
        return SyncResult(
            character_id,
            run.owner.name,
            status,
            run.figures,
            tuple(run.pending_reasons),
            tuple(run.new_ids),
        )

    def sync_list(
        self,
        owner: ListOwner,
        fetch: PageFetcher,
        options: SyncOptions | None = None,
        progress: SyncProgress | None = None,
        *,
        first_page: ListPageResult | None = None,
    ) -> tuple[_Run, str]:
        """Sync ``owner``'s list, read through ``fetch`` (a character's token, or a
        corporation's directors in turn): the run and its status."""
        options = options or SyncOptions()
        progress = progress or _NoProgress()
        started, started_at = self._clock.monotonic(), self._clock.now()
        run = _Run(owner, options, self.claims.open(), fetch, first_page=first_page)
        progress.started(owner.name)
        try:
            status = self._sync(run, progress)
        except NeedsLogin:
            raise
        except Exception as exc:
            run.figures.elapsed_s = round(self._clock.monotonic() - started, 3)
            self._finish(run, started_at, "failed", error=str(exc))
            raise
        run.figures.elapsed_s = round(self._clock.monotonic() - started, 3)
        self._finish(run, started_at, status)
        return run, status

    def _load_character(self, character_id: int) -> Character:
        with self.db.session() as session:
            character = require_character(session, character_id)
        if character.status != CharacterStatus.ACTIVE:
            raise NeedsLogin(
                f"character {character_id} ({character.name}) is "
                f"{character.status.replace('_', ' ')}: "
                f"{character.status_reason or 'no reason recorded'}",
                reason=character.status,
                character_id=character_id,
            )
        if KILLMAIL_SCOPE not in character.scopes.split():
            raise UsageError(
                f"character {character_id} did not grant {KILLMAIL_SCOPE}",
                hint="log in again with that scope",
            )
        return character

    def _sync(self, run: _Run, progress: SyncProgress) -> str:
        owner, options = run.owner, run.options
        due_pending = self._due_pending(owner)
        expires = owner.list_expires_at
        fresh = expires is not None and expires > self._clock.now()
        if fresh and not (options.force or options.full):
            run.figures.skipped_cache = True
            refs: list[KillmailRef] = []
            list_result = None
        else:
            list_result = self._walk(run, progress)
            refs = list(list_result[0])
        self._fetch_and_save(
            run,
            [ref for ref in refs if ref.killmail_id not in run.flushed],
            [ref for ref in due_pending if ref.killmail_id not in run.flushed],
            progress,
        )
        if list_result is not None:
            self._store_list_cache(owner, list_result[1], etag=not run.withhold_etag)
        if run.pending:
            return "partial"
        if run.figures.skipped_cache:
            return "cached"
        return "not_modified" if run.figures.not_modified and not refs else "ok"

    # -- 1. the list walk ---------------------------------------------------------------

    def _walk(
        self, run: _Run, progress: SyncProgress
    ) -> tuple[Sequence[KillmailRef], ListPageResult | None]:
        owner = run.owner

        def count(page: ListPageResult) -> None:
            run.figures.pages += 1
            run.figures.spend(owner.bucket, 1 if page.not_modified else 2)
            progress.pages(page.page, page.pages)
            run.read.extend(page.items)
            if page.page < page.pages and self._next_page_waits(run):
                self._save_what_was_read(run, progress)

        def all_known(page: ListPageResult) -> bool:
            # No ETag: the last walk did not end (it may have saved its newest pages and
            # died), so a page of linked killmails says nothing about the pages below.
            if run.options.full or not page.items or owner.list_etag is None:
                return False
            ids = [ref.killmail_id for ref in page.items]
            # Saved by this walk (while it waited) is not known from before: after a
            # restart, such a page must not end the walk above pages it has not read.
            if run.flushed.intersection(ids):
                return False
            return len(self._linked(owner, ids)) == len(set(ids))

        first_page, run.first_page = run.first_page, None  # fetched already; once only
        listed = walk_killmail_list(
            run.fetch_page,
            label=f"{owner.label}'s list",
            etag=None if run.options.full else owner.list_etag,
            first_page=first_page,
            stop_when=all_known,
            on_page=count,
        )
        walk = listed.walk
        run.figures.list_restarts = walk.restarts
        if walk.not_modified:
            run.figures.not_modified += 1
        run.figures.found = len(walk.items)
        return walk.items, listed.first

    def _next_page_waits(self, run: _Run) -> bool:
        """Whether the list's next page would wait for its bucket at least
        :data:`SAVE_WHILE_WAITING_S` (a long list: a corporation's, or a huge character's)."""
        fetch = run.fetch_page
        return isinstance(fetch, PacedPageFetcher) and fetch.ready_in_s() >= SAVE_WHILE_WAITING_S

    def _save_what_was_read(self, run: _Run, progress: SyncProgress) -> None:
        """Fetch and save the bodies of the pages read so far, while the list's bucket
        refills, instead of after the walk (killmails are immutable: what a list held is
        stored whatever the walk meets later)."""
        refs = [ref for ref in run.read if ref.killmail_id not in run.flushed]
        run.read.clear()
        if refs:
            run.flushed.update(ref.killmail_id for ref in refs)
            self._fetch_and_save(run, refs, (), progress)

    def _linked(self, owner: ListOwner, ids: Iterable[int]) -> set[int]:
        with self.db.session() as session:
            return owner.linked(session, ids)

    def _store_list_cache(
        self, owner: ListOwner, first: ListPageResult | None, *, etag: bool = True
    ) -> None:
        """The list's expiry, and its ETag unless ``etag`` is false (the next walk after
        the expiry must then read the list again)."""
        if first is None:
            return
        with self.db.session() as session:
            owner.store_list_cache(session, first, etag=etag)

    # -- 2. the plan --------------------------------------------------------------------

    def _due_pending(self, owner: ListOwner) -> list[KillmailRef]:
        with self.db.session() as session:
            rows = session.execute(
                select(PENDING.c.killmail_id, PENDING.c.killmail_hash).where(
                    owner.pending_of(),
                    PENDING.c.next_attempt_at <= self._clock.now(),
                )
            )
            return [KillmailRef(r.killmail_id, r.killmail_hash) for r in rows]

    def _plan(self, run: _Run, refs: Sequence[KillmailRef], *, listed: bool) -> list[KillmailRef]:
        """Link what is stored; return what must be fetched (newest first). Before the
        first link of a walk (``listed``), the list's ETag goes: links are made newest
        first, so until the walk ends and stores the new ETag, only a walk without the
        early stop may be trusted to find the rest."""
        unique = {ref.killmail_id: ref for ref in refs}
        with self.db.session() as session:
            if listed and not run.etag_forgotten and run.owner.list_etag is not None:
                run.owner.forget_list_etag(session)
                run.etag_forgotten = True
            stored = existing_killmail_ids(session, unique)
            run.owner.link(session, stored)
            session.execute(delete(PENDING).where(PENDING.c.killmail_id.in_(list(stored))))
        run.figures.already += len(stored)
        run.figures.linked += len(stored)
        return sorted(
            (r for k, r in unique.items() if k not in stored),
            key=lambda r: r.killmail_id,
            reverse=True,
        )

    # -- 3 + 4. fetch and save ----------------------------------------------------------

    def _fetch_and_save(
        self,
        run: _Run,
        refs: Sequence[KillmailRef],
        due_pending: Sequence[KillmailRef],
        progress: SyncProgress,
    ) -> None:
        run.figures.pending_retried = len(
            {r.killmail_id for r in due_pending} - {r.killmail_id for r in refs}
        )
        wanted = self._plan(run, [*refs, *due_pending], listed=bool(refs))
        claim = Claim()
        mine, theirs = self.inflight.claim(claim, (ref.killmail_id for ref in wanted))
        owned = set(mine)
        try:
            # Under the process's registry, the database's claims: what another worker
            # fetches is waited for, never fetched twice.
            ours = [ref for ref in wanted if ref.killmail_id in owned]
            # What the body threads will not come to at once, workers of other egresses
            # may fetch first: all of it behind older syncs, else beyond the first block.
            first = 0 if self.fetcher.backlogged() else self.fetcher.per_stream
            if len(ours) > first:
                run.claims.want(ours[first:], run.owner.pending_values())
            done, elsewhere = self._fetch_ours(run, ours, progress, total=len(wanted))
            self._await_elsewhere(run, elsewhere, progress, done, len(wanted))
        finally:
            run.claims.close()
            self.inflight.settle(claim, mine, {k: run.pending[k] for k in mine if k in run.pending})
        self._adopt_theirs(run, [ref for ref in wanted if ref.killmail_id in theirs], theirs)

    def _fetch_ours(
        self, run: _Run, ours: list[KillmailRef], progress: SyncProgress, total: int, done: int = 0
    ) -> tuple[int, list[KillmailRef]]:
        """Claim ``ours`` a block at a time as the body threads get to them (on a body
        thread: a sync behind others claims nothing before its turn), fetch and save what
        we claimed; returns ``done`` plus how many it settled, and the bodies claimed
        elsewhere meanwhile (to wait for)."""
        queue = deque(ours)
        elsewhere: list[KillmailRef] = []
        linked = [done]  # what each block found stored already (another sync saved it)

        def claim_next() -> list[KillmailRef]:
            while queue:
                block = [queue.popleft() for _ in range(min(self.fetcher.per_stream, len(queue)))]
                taken = run.claims.take(ref.killmail_id for ref in block)
                elsewhere.extend(ref for ref in block if ref.killmail_id not in taken)
                # Another sync may have saved some of these between our plan and our claim.
                stored = self._link_stored(run, taken)
                linked.append(len(stored))
                todo = [ref for ref in block if ref.killmail_id in taken - stored]
                if todo:
                    return todo
            return []

        batch: list[KillmailRows] = []
        fetched_count = 0
        with self.fetcher.stream([], more=claim_next) as bodies:
            progress.bodies(done, total)
            for fetched in bodies:
                rows = self._outcome(run, fetched)
                if rows is not None:
                    batch.append(rows)
                if len(batch) >= run.options.batch_size:
                    progress.saving(len(batch))
                    self._save_batch(run, batch)
                    batch = []
                fetched_count += 1
                progress.bodies(fetched_count + sum(linked), total)
        progress.saving(len(batch))
        self._save_batch(run, batch)
        return fetched_count + sum(linked), elsewhere

    def _await_elsewhere(
        self, run: _Run, refs: list[KillmailRef], progress: SyncProgress, done: int, total: int
    ) -> None:
        """Bodies another worker claimed: link them as they land, and take over the claims
        that lapse (the holder died or gave up); never fetch one a live holder fetches."""
        if not refs:
            return
        run.figures.shared_elsewhere += len(refs)
        waiting = {ref.killmail_id: ref for ref in refs}
        while waiting:
            taken = run.claims.take(waiting)
            # Looked at after the take: a claim its holder released by saving the body
            # shows as stored here, never as a claim to take over.
            done += self._link_landed(run, waiting)
            lapsed = [waiting.pop(k) for k in sorted(taken & waiting.keys(), reverse=True)]
            if lapsed:
                run.figures.claims_taken_over += len(lapsed)
                done, again = self._fetch_lapsed(run, lapsed, progress, total, done)
                waiting.update((ref.killmail_id, ref) for ref in again)  # claimed meanwhile
            progress.bodies(done, total)
            if waiting and self._closed.wait(self._claim_poll_s):
                raise FetcherClosed("the sync engine was closed while a sync waited for bodies")

    def _link_landed(self, run: _Run, waiting: dict[int, KillmailRef]) -> int:
        """Link the waited-for bodies that are stored now and forget them (and our claims
        on them); how many."""
        stored = self._link_stored(run, waiting)
        for killmail_id in stored:
            del waiting[killmail_id]
        return len(stored)

    def _link_stored(self, run: _Run, killmail_ids: Iterable[int]) -> set[int]:
        """Of these ids, link those stored now and drop our claims on them, in one
        transaction (they count as already stored); returns them."""
        with self.db.session() as session:
            stored = existing_killmail_ids(session, killmail_ids)
            run.owner.link(session, stored)
            run.claims.release_in(session, stored)
        run.figures.already += len(stored)
        return stored

    def _fetch_lapsed(
        self, run: _Run, refs: list[KillmailRef], progress: SyncProgress, total: int, done: int
    ) -> tuple[int, list[KillmailRef]]:
        """Bodies whose claim we took over. A holder that could not fetch one recorded it
        pending and released it: record it pending too (as for another sync of this
        process, :meth:`Claim.failure`); fetch the others."""
        with self.db.session() as session:
            failed = released_as_pending(
                session, [ref.killmail_id for ref in refs], self._clock.now()
            )
        for ref in refs:
            if ref.killmail_id in failed:
                self._record_pending(run, ref, failed[ref.killmail_id])
        return self._fetch_ours(
            run,
            [ref for ref in refs if ref.killmail_id not in failed],
            progress,
            total,
            done + len(failed),
        )

    def _fetch_body(self, ref: KillmailRef) -> KillmailRows:
        """On a body thread: fetch and parse, so only the parsed rows wait for the save."""
        body = self.esi.fetch_killmail(ref.killmail_id, ref.killmail_hash)
        return parse_killmail(body, killmail_hash=ref.killmail_hash)

    def _outcome(
        self, run: _Run, fetched: Fetched[KillmailRef, KillmailRows]
    ) -> KillmailRows | None:
        run.figures.fetched += 1
        ref = fetched.key
        try:
            rows = fetched.result()
        except EsiError as exc:
            self._record_pending(run, ref, str(exc))
            return None
        except KillmailError as exc:  # fetched (and paid for), but not a killmail we can store
            run.figures.spend("killmail", 2)
            self._record_pending(run, ref, str(exc))
            return None
        run.figures.spend("killmail", 2)
        return rows

    def _adopt_theirs(self, run: _Run, refs: list[KillmailRef], owners: dict[int, Claim]) -> None:
        """Killmails another sync fetched: once it saved them, link them to us too."""
        if not refs:
            return
        run.figures.shared_inflight += len(refs)
        for owner in set(owners.values()):  # each claim once
            owner.wait()
        stored = self._link_stored(run, (ref.killmail_id for ref in refs))
        for ref in refs:
            if ref.killmail_id not in stored:
                reason = (
                    owners[ref.killmail_id].failure(ref.killmail_id)
                    or "fetched by another sync, not saved"
                )
                self._record_pending(run, ref, reason)

    def _learn_universe(self, batch: list[KillmailRows]) -> None:
        """Cache the solar systems (region, security) and victims' ships (group) of a
        batch before it is saved, for `kills` and the webhooks' region and ship-group
        filters. Static data: after the first sightings this is two cache reads. A fill
        holds a process-wide lock, so no id is asked for twice at once; a failure leaves
        the ids unknown (filters then refuse the kill) and never the save."""
        systems = {rows.killmail["solar_system_id"] for rows in batch}
        ships = {rows.killmail["victim_ship_type_id"] for rows in batch}
        with self.db.session() as session:
            systems -= get_systems(session, systems).keys()
            ships -= get_types(session, ships).keys()
        if not systems and not ships:
            return
        try:
            with self._universe_lock:
                fetch_systems(self.db, self.esi, systems)
                fetch_types(self.db, self.esi, ships)
        except EsiError as exc:
            logger.warning("could not look up systems or ship types: %s", exc)

    def _save_batch(self, run: _Run, batch: list[KillmailRows]) -> None:
        if not batch:
            return
        result, resolved = self.save_bodies(run.owner, run.claims, batch)
        run.figures.names_resolved += resolved
        run.figures.new += result.new
        run.figures.already += result.already
        run.figures.linked += len(batch)
        run.new_ids.extend(result.new_ids)

    def save_bodies(
        self, owner: ListOwner, claims: ClaimSet, batch: list[KillmailRows]
    ) -> tuple[SaveResult, int]:
        """Store fetched bodies for ``owner``'s list in one transaction: the killmails, the
        links, pending rows and wants cleared, claims released, one event per new
        killmail. Returns what the save did and how many names it resolved."""
        self._learn_universe(batch)
        names, resolved = self.names.resolve(set().union(*map(ids_to_name, batch)))
        ids = [rows.killmail_id for rows in batch]
        with self.db.session() as session:
            result = save_killmails(session, batch)
            owner.link(session, ids)
            session.execute(delete(PENDING).where(PENDING.c.killmail_id.in_(ids)))
            delete_wants(session, WANTS.c.killmail_id.in_(ids))
            claims.release_in(session, ids)
            new = set(result.new_ids)
            fresh = [rows for rows in batch if rows.killmail_id in new]
            values = self.valuer.value_new(session, fresh) if self.valuer and fresh else {}
            save_events(
                session, killmail_saved_events(fresh, names, values=values, **owner.event_ids())
            )
        return result, resolved

    def _record_pending(self, run: _Run, ref: KillmailRef, reason: str) -> None:
        run.figures.pending += 1
        run.pending[ref.killmail_id] = reason
        now = self._clock.now()
        with self.db.session() as session:
            existing = session.get(PendingKillmail, ref.killmail_id)
            mine = run.owner.pending_values()
            if existing is not None and (existing.character_id, existing.corporation_id) != (
                mine["character_id"],
                mine["corporation_id"],
            ):
                # The row retries the body for another owner; when it lands, nothing
                # links it to this one unless this list is walked again whole: store no
                # ETag (the walk cleared the old one before its first link).
                run.withhold_etag = True
            attempts = 1 if existing is None else existing.attempts + 1
            delay = PENDING_BACKOFF.wait_s(attempts)
            values = {
                "killmail_id": ref.killmail_id,
                "killmail_hash": ref.killmail_hash,
                **mine,
                "reason": reason[:2000],
                "attempts": attempts,
                "first_seen_at": now,
                "next_attempt_at": now + timedelta(seconds=delay),
            }
            stmt = dialect_insert(session, PENDING).values(values)
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[PENDING.c.killmail_id],
                    set_={k: stmt.excluded[k] for k in ("reason", "attempts", "next_attempt_at")},
                )
            )
            run.claims.release_in(session, [ref.killmail_id])

    # -- 5. the run record --------------------------------------------------------------

    def _finish(
        self, run: _Run, started_at: datetime, status: str, error: str | None = None
    ) -> None:
        last_error = error or (run.pending_reasons[0] if run.pending_reasons else None)
        with self.db.session() as session:
            run.owner.record_run(
                session,
                self._clock.now(),
                RunOutcome(started_at, status, asdict(run.figures), error, last_error),
            )
