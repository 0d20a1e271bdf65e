"""The cheap re-sync: a character with nothing new costs one request and a share of two
transactions.

Most jobs of a busy install find nothing new: page 1 of the list answers 304 (or its cache
has not even expired). For those, the engine's full sync is needless work: a transaction to
load the character, one for its due pending bodies, one for its token, one for the plan,
one for the run record. Here jobs that run at once share them (:mod:`killcli.coalesce`):
one transaction takes every starting job's lease and reads its character and whether it
has pending bodies due; the job then sends its one conditional request on its own thread;
and one transaction, written behind (:class:`~killcli.coalesce.WriteBehind`, every
:data:`RECORD_EVERY_S`), records the jobs finished meanwhile (list ETag and expiry, last
sync, the run record) and gives their leases up. The job does not wait for it: a process
killed before it is written loses only those records (the characters are synced again,
one request each; their leases are taken over as a dead holder's).

A job that one request cannot settle goes on to :meth:`SyncEngine.sync_character`
unchanged: a full sync, pending bodies due, a token to refresh, a character that is not
active or lacks the scope, no ETag yet, or a list that changed (its page 1 is handed over,
so it is not asked for twice).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select, update

from killcli.accounts import KILLMAIL_SCOPE, Accounts
from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.coalesce import Coalescer, WriteBehind
from killcli.db import Database
from killcli.db.models import CharacterStatus
from killcli.errors import KillsyncError, NeedsLogin
from killcli.esi.client import EsiClient
from killcli.esi.models import ListPageResult
from killcli.queue.leases import LeaseKeeper, acquire_each, release_in
from killcli.sync.engine import CHARACTERS, PENDING, SyncFigures, SyncProgress, SyncResult
from killcli.sync.owners import RunRecord, record_runs

CHUNK = 500  # ids per IN list
RECORD_EVERY_S = 0.05  # finished jobs gathered per record transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """What the start transaction read about a character one request may settle."""

    character_id: int
    name: str
    list_etag: str | None
    list_expires_at: datetime | None
    access_token_enc: str | None
    access_expires_at: datetime | None


@dataclass(frozen=True)
class Begun:
    """A job's start: whether it took its character's lease, and what one request needs
    (None when the engine must sync it)."""

    leased: bool
    candidate: Candidate | None
    lease: str
    owner: str


@dataclass(frozen=True)
class _Start:
    character_id: int
    lease: str
    owner: str
    ttl_s: float


@dataclass(frozen=True)
class _Record:
    lease: str
    owner: str
    run: RunRecord
    first: ListPageResult | None


@dataclass(frozen=True)
class Attempt:
    """How a quick try ended: ``result`` when the job is done, else what the full sync
    should start from (``first_page``: page 1 already fetched, when it was a 200)."""

    result: SyncResult | None = None
    first_page: ListPageResult | None = None


class QuickSync:
    """The cheap path of one worker process; thread-safe. :meth:`close` writes the records
    still behind."""

    def __init__(
        self,
        db: Database,
        esi: EsiClient,
        accounts: Accounts,
        keeper: LeaseKeeper,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self._clock = clock
        self.esi = esi
        self.accounts = accounts
        self.keeper = keeper
        self.starts: Coalescer[_Start, Begun] = Coalescer(self._begin_many)
        self.finishes: WriteBehind[_Record] = WriteBehind(
            self._record_many, every_s=RECORD_EVERY_S, name="killsync-run-records"
        )

    def close(self) -> None:
        self.finishes.close()

    def begin(self, character_id: int, lease: str, owner: str, *, ttl_s: float) -> Begun:
        """Take the character's lease (see :mod:`killcli.queue.leases`) and read what a
        quick try needs, in a transaction shared with the jobs starting now."""
        begun = self.starts.submit(_Start(character_id, lease, owner, ttl_s))
        if begun.leased:
            self.keeper.hold(lease, owner)
        return begun

    def attempt(self, begun: Begun, *, full: bool, progress: SyncProgress) -> Attempt:
        """Settle the job with one conditional request if it can be; raises what the
        request raised (after recording the failed run, as the engine does)."""
        candidate = begun.candidate
        if full or candidate is None:
            return Attempt()
        character_id = candidate.character_id
        started, started_at = self._clock.monotonic(), self._clock.now()
        figures = SyncFigures()
        if candidate.list_expires_at is not None and candidate.list_expires_at > started_at:
            progress.started(candidate.name)
            figures.skipped_cache = True
            return self._done(begun, candidate, started, started_at, "cached", figures, None)
        token = self.accounts.usable_access_token(
            candidate.access_token_enc, candidate.access_expires_at
        )
        if token is None or candidate.list_etag is None:
            return Attempt()
        progress.started(candidate.name)
        try:
            page = self.esi.fetch_killmail_list_page(
                character_id, token, 1, etag=candidate.list_etag
            )
        except NeedsLogin:
            raise  # the worker marks the character; no run is recorded (as in the engine)
        except Exception as exc:
            figures.elapsed_s = round(self._clock.monotonic() - started, 3)
            self._record(begun, candidate, started_at, "failed", figures, None, str(exc))
            raise
        if not page.not_modified:
            return Attempt(first_page=page)
        figures.pages, figures.not_modified = 1, 1
        figures.spend("char-killmail", 1)
        progress.pages(1, page.pages)
        return self._done(begun, candidate, started, started_at, "not_modified", figures, page)

    def _done(
        self,
        begun: Begun,
        candidate: Candidate,
        started: float,
        started_at: datetime,
        status: str,
        figures: SyncFigures,
        first: ListPageResult | None,
    ) -> Attempt:
        figures.elapsed_s = round(self._clock.monotonic() - started, 3)
        self._record(begun, candidate, started_at, status, figures, first, None)
        return Attempt(SyncResult(candidate.character_id, candidate.name, status, figures))

    def _record(
        self,
        begun: Begun,
        candidate: Candidate,
        started_at: datetime,
        status: str,
        figures: SyncFigures,
        first: ListPageResult | None,
        error: str | None,
    ) -> None:
        """Record the run and give the lease up, behind, in a transaction shared with the
        jobs finishing meanwhile (the lease is no longer renewed from here on)."""
        self.keeper.forget(begun.lease)
        run = RunRecord(candidate.character_id, started_at, status, asdict(figures), error, error)
        self.finishes.post(_Record(begun.lease, begun.owner, run, first))

    # -- the batches --------------------------------------------------------------------

    def _begin_many(self, starts: Sequence[_Start]) -> list[Begun]:
        """One transaction: the leases, and the characters one request may settle (active,
        with the scope, no pending body due)."""
        ids = [s.character_id for s in starts]
        now = self._clock.now()
        found: dict[int, Candidate] = {}
        due: set[int] = set()
        unique = sorted(set(ids))
        c = CHARACTERS.c
        with self.db.session() as session:
            leased = acquire_each(
                session, [(s.lease, s.owner) for s in starts], max(s.ttl_s for s in starts), now
            )
            for first in range(0, len(unique), CHUNK):
                chunk = unique[first : first + CHUNK]
                rows = session.execute(
                    select(
                        c.character_id,
                        c.name,
                        c.status,
                        c.scopes,
                        c.list_etag,
                        c.list_expires_at,
                        c.access_token_enc,
                        c.access_expires_at,
                    ).where(c.character_id.in_(chunk))
                )
                for row in rows:
                    if (
                        row.status == CharacterStatus.ACTIVE
                        and KILLMAIL_SCOPE in row.scopes.split()
                    ):
                        found[row.character_id] = Candidate(
                            row.character_id,
                            row.name,
                            row.list_etag,
                            row.list_expires_at,
                            row.access_token_enc,
                            row.access_expires_at,
                        )
                due.update(
                    session.scalars(
                        select(PENDING.c.character_id)
                        .where(PENDING.c.character_id.in_(chunk), PENDING.c.next_attempt_at <= now)
                        .distinct()
                    )
                )
        return [
            Begun(
                ok, None if s.character_id in due else found.get(s.character_id), s.lease, s.owner
            )
            for s, ok in zip(starts, leased, strict=True)
        ]

    def _record_many(self, records: Sequence[_Record]) -> None:
        """One transaction: each character's list cache, its run (:func:`record_runs`) and
        its lease given up. If the database refuses, they are lost, as the docstring of
        this module says (logged)."""
        try:
            self._write_records(records)
        except KillsyncError as exc:
            logger.warning(
                "could not record %d finished syncs (%s); their characters are synced again "
                "and their leases expire",
                len(records),
                exc,
            )

    def _write_records(self, records: Sequence[_Record]) -> None:
        listed = [
            {"cid": r.run.character_id, "etag": r.first.etag or None, "expires": r.first.expires}
            for r in records
            if r.first is not None
        ]
        c = CHARACTERS.c
        with self.db.session() as session:
            if listed:
                session.execute(
                    update(CHARACTERS)
                    .where(c.character_id == bindparam("cid"))
                    .values(
                        list_etag=func.coalesce(bindparam("etag"), c.list_etag),
                        list_expires_at=bindparam("expires"),
                    ),
                    listed,
                    execution_options={"synchronize_session": False},
                )
            record_runs(session, self._clock.now(), [r.run for r in records])
            release_in(session, {r.lease: r.owner for r in records})
