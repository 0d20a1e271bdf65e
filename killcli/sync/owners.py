"""Whose list a sync walks: a character's own, or a corporation's (through directors).

The engine's plan, claims, fetches and saves are the same for both; what differs is
where a killmail is linked (``character_killmails`` or ``corporation_killmails``), where
pending bodies and the list's ETag are kept, and where the run is recorded. Each owner is
a small frozen snapshot of its row, read when the sync starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, insert, select, update
from sqlalchemy.orm import Session

from killcli.db.models import Character, Corporation, PendingKillmail, SyncRun, table_of
from killcli.db.store import (
    CHARACTER_KILLMAILS,
    CHARACTERS,
    CORPORATION_KILLMAILS,
    CORPORATIONS,
    link_characters,
    link_corporation,
)
from killcli.esi.models import ListPageResult

PENDING = table_of(PendingKillmail)
RUNS = table_of(SyncRun)


@dataclass(frozen=True)
class RunOutcome:
    """How one sync ended, as its owner records it."""

    started_at: datetime
    status: str
    figures: Mapping[str, Any]
    error: str | None = None  # why the run failed
    last_error: str | None = None  # what the owner's row shows (a failure, a pending body)


@dataclass(frozen=True)
class ListOwner(ABC):
    """The owner of a recent-killmails list, as the engine sees it."""

    owner_id: int
    name: str
    list_etag: str | None
    list_expires_at: datetime | None

    #: the rate-limit group its list pages are paid from (the run's figures)
    bucket: str = ""
    kind: str = ""  # "character" or "corporation"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.owner_id}"

    @abstractmethod
    def link(self, session: Session, killmail_ids: Iterable[int]) -> None:
        """Record that this owner's list held these (stored) killmails."""

    @abstractmethod
    def linked(self, session: Session, killmail_ids: Iterable[int]) -> set[int]:
        """Which of these killmails are linked to this owner already."""

    @abstractmethod
    def pending_of(self) -> ColumnElement[bool]:
        """The pending rows this owner retries."""

    @abstractmethod
    def pending_values(self) -> dict[str, int | None]:
        """The columns of a pending row this owner records."""

    @abstractmethod
    def store_list_cache(self, session: Session, first: ListPageResult, *, etag: bool) -> None:
        """The list's expiry, and its ETag when ``etag``."""

    @abstractmethod
    def forget_list_etag(self, session: Session) -> None:
        """No ETag until a walk is complete again: a walk that links part of a changed list
        says so first, so that one cut short leaves the next walk no ETag to trust."""

    @abstractmethod
    def record_run(self, session: Session, now: datetime, outcome: RunOutcome) -> None:
        """The finished run, in the caller's transaction."""

    def event_ids(self) -> dict[str, int | None]:
        """Whose sync a ``killmail.saved`` event came from."""
        return self.pending_values()


@dataclass(frozen=True)
class CharacterOwner(ListOwner):
    bucket: str = "char-killmail"
    kind: str = "character"

    @classmethod
    def of(cls, character: Character) -> CharacterOwner:
        return cls(
            character.character_id, character.name, character.list_etag, character.list_expires_at
        )

    def link(self, session: Session, killmail_ids: Iterable[int]) -> None:
        link_characters(session, [(self.owner_id, k) for k in killmail_ids])

    def linked(self, session: Session, killmail_ids: Iterable[int]) -> set[int]:
        return set(
            session.scalars(
                select(CHARACTER_KILLMAILS.c.killmail_id).where(
                    CHARACTER_KILLMAILS.c.character_id == self.owner_id,
                    CHARACTER_KILLMAILS.c.killmail_id.in_(list(killmail_ids)),
                )
            )
        )

    def pending_of(self) -> ColumnElement[bool]:
        return PENDING.c.character_id == self.owner_id

    def pending_values(self) -> dict[str, int | None]:
        return {"character_id": self.owner_id, "corporation_id": None}

    def store_list_cache(self, session: Session, first: ListPageResult, *, etag: bool) -> None:
        character = session.get(Character, self.owner_id)
        if character is None:  # removed while syncing
            return
        if first.etag and etag:
            character.list_etag = first.etag
        character.list_expires_at = first.expires

    def forget_list_etag(self, session: Session) -> None:
        session.execute(
            update(CHARACTERS)
            .where(CHARACTERS.c.character_id == self.owner_id)
            .values(list_etag=None)
        )

    def record_run(self, session: Session, now: datetime, outcome: RunOutcome) -> None:
        record_runs(session, now, [RunRecord(self.owner_id, **asdict(outcome))])


@dataclass(frozen=True)
class CorporationOwner(ListOwner):
    bucket: str = "corp-killmail"
    kind: str = "corporation"

    @classmethod
    def of(cls, corporation: Corporation) -> CorporationOwner:
        return cls(
            corporation.corporation_id,
            corporation.name or str(corporation.corporation_id),
            corporation.list_etag,
            corporation.list_expires_at,
        )

    def link(self, session: Session, killmail_ids: Iterable[int]) -> None:
        link_corporation(session, self.owner_id, killmail_ids)

    def linked(self, session: Session, killmail_ids: Iterable[int]) -> set[int]:
        return set(
            session.scalars(
                select(CORPORATION_KILLMAILS.c.killmail_id).where(
                    CORPORATION_KILLMAILS.c.corporation_id == self.owner_id,
                    CORPORATION_KILLMAILS.c.killmail_id.in_(list(killmail_ids)),
                )
            )
        )

    def pending_of(self) -> ColumnElement[bool]:
        return PENDING.c.corporation_id == self.owner_id

    def pending_values(self) -> dict[str, int | None]:
        return {"character_id": None, "corporation_id": self.owner_id}

    def store_list_cache(self, session: Session, first: ListPageResult, *, etag: bool) -> None:
        corporation = session.get(Corporation, self.owner_id)
        if corporation is None:
            return
        if first.etag and etag:
            corporation.list_etag = first.etag
        corporation.list_expires_at = first.expires

    def forget_list_etag(self, session: Session) -> None:
        session.execute(
            update(CORPORATIONS)
            .where(CORPORATIONS.c.corporation_id == self.owner_id)
            .values(list_etag=None)
        )

    def record_run(self, session: Session, now: datetime, outcome: RunOutcome) -> None:
        session.execute(
            update(CORPORATIONS)
            .where(CORPORATIONS.c.corporation_id == self.owner_id)
            .values(last_sync_at=now, last_error=outcome.last_error)
        )
        session.execute(
            insert(RUNS).values(
                character_id=None,
                corporation_id=self.owner_id,
                started_at=outcome.started_at,
                finished_at=now,
                status=outcome.status,
                figures=dict(outcome.figures),
                error=outcome.error,
            )
        )


@dataclass(frozen=True)
class RunRecord:
    """One finished character sync, as :func:`record_runs` stores it."""

    character_id: int
    started_at: datetime
    status: str
    figures: Mapping[str, Any]
    error: str | None = None  # why the run failed
    last_error: str | None = None  # what the character's row shows (a failure, a pending body)


def record_runs(session: Session, now: datetime, runs: Sequence[RunRecord]) -> None:
    """The runs' records, finished ``now``, and each character's last sync and last error,
    in the caller's transaction (one statement each, however many runs: the worker's quick
    path records many at once)."""
    session.execute(
        update(CHARACTERS)
        .where(CHARACTERS.c.character_id == bindparam("cid"))
        .values(last_sync_at=now, last_error=bindparam("last_error")),
        [{"cid": r.character_id, "last_error": r.last_error} for r in runs],
        execution_options={"synchronize_session": False},
    )
    session.execute(
        insert(RUNS),
        [
            {
                "character_id": r.character_id,
                "started_at": r.started_at,
                "finished_at": now,
                "status": r.status,
                "figures": dict(r.figures),
                "error": r.error,
            }
            for r in runs
        ],
    )
