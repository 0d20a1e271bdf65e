"""Tracked corporations and the directors whose tokens read their killmails.

A character whose token grants :data:`CORPORATION_SCOPES` gets a ``corporation_directors``
row when it logs in (or is added). Its roles are then checked: ``POST
/characters/affiliation`` says which corporation it is in (fresher than ``GET
/characters/{id}``), ``GET /characters/{id}/roles`` whether it is a Director there. A
Director of a player corporation makes that corporation tracked; NPC corporations
(:func:`is_npc_corporation`) have no killmail list and never are. The check is repeated
when ESI's answer expires (an hour), or a day after a "not in the corporation" answer.

A director's state never touches its character's own sync: the character's status,
tokens and list are the accounts' (:mod:`killcli.accounts`); this module only decides
whether the token may also be spent on the corporation route, where a 4xx costs 5 tokens
of a 30-token bucket, so every decision is made on the roles check before spending.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.db import Database
from killcli.db.models import (
    Character,
    CharacterStatus,
    Corporation,
    CorporationDirector,
    CorporationKillmail,
    CorporationStatus,
    DirectorStatus,
)
from killcli.db.store import count_by
from killcli.errors import CorporationDisabled, EsiError, EsiHttpError, KillsyncError, UsageError
from killcli.esi.client import MAX_AFFILIATION_IDS, EsiClient
from killcli.esi.models import AffiliationResult, RolesResult

if TYPE_CHECKING:
    from killcli.sync.engine import TokenProvider

CORPORATION_KILLMAIL_SCOPE = "esi-killmails.read_corporation_killmails.v1"
ROLES_SCOPE = "esi-characters.read_corporation_roles.v1"
CORPORATION_SCOPES = (CORPORATION_KILLMAIL_SCOPE, ROLES_SCOPE)
DIRECTOR_ROLE = "Director"
NPC_CORPORATION_IDS = range(1_000_000, 2_000_001)  # 1,000,000 to 2,000,000
ROLES_CACHE_S = 3600.0  # when ESI sends no Expires: its documented cache of the roles route
NOT_IN_CORPORATION_RECHECK_S = 86_400.0  # zKillboard's wait after "not in the corporation"
FAILED_CHECK_RETRY_S = 300.0  # a check ESI could not answer: tried again this much later


def is_npc_corporation(corporation_id: int) -> bool:
    """NPC corporations have no killmail list of their own (and no directors)."""
    return corporation_id in NPC_CORPORATION_IDS


def has_corporation_scopes(scopes: Iterable[str]) -> bool:
    return set(CORPORATION_SCOPES) <= set(scopes)


def note_scopes(session: Session, character_id: int, scopes: Iterable[str]) -> None:
    """In the accounts' transaction that stored a token: a token with the corporation
    scopes makes its character a director candidate (checked when due); a director whose
    new token lost them is ``no_scope`` (its own sync goes on)."""
    director = session.get(CorporationDirector, character_id)
    if has_corporation_scopes(scopes):
        if director is None:
            session.add(CorporationDirector(character_id=character_id))
        elif director.status == DirectorStatus.NO_SCOPE:
            director.status, director.status_reason = DirectorStatus.UNCHECKED, None
            director.roles_expires_at = None  # checked at once
    elif director is not None and director.status != DirectorStatus.NO_SCOPE:
        missing = sorted(set(CORPORATION_SCOPES) - set(scopes))
        director.status = DirectorStatus.NO_SCOPE
        director.status_reason = f"the token no longer grants {', '.join(missing)}"
        if director.corporation_id is not None:
            refresh_corporation_status(session, [director.corporation_id])


@dataclass(frozen=True)
class DirectorCheckResult:
    """One director's roles check: what its token may do for which corporation."""

    character_id: int
    corporation_id: int | None
    status: DirectorStatus
    reason: str | None = None
    tracked: bool = False  # this check started tracking the corporation

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CorporationInfo:
    """One row of `killsync corporations list`."""

    corporation_id: int
    name: str | None
    enabled: bool
    status: CorporationStatus
    status_reason: str | None
    directors_usable: int
    directors_total: int
    last_sync_at: datetime | None
    killmails: int
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        """One row of the ``corporations`` JSON payload."""
        return asdict(self)


@dataclass(frozen=True)
class DirectorInfo:
    """A character's director state, as `users list` shows it."""

    corporation_id: int | None
    status: DirectorStatus
    status_reason: str | None
    roles_expires_at: datetime | None


class Corporations:
    """Directors' roles checks and tracked corporations; thread-safe, one per process."""

    def __init__(
        self, db: Database, esi: EsiClient, tokens: TokenProvider, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.db = db
        self.esi = esi
        self.tokens = tokens
        self._clock = clock

    # -- roles checks -------------------------------------------------------------------

    def check_due(self, character_ids: Sequence[int] | None = None) -> list[DirectorCheckResult]:
        """Check the directors whose last answer expired (of ``character_ids``, or all):
        one affiliation call per 1000 of them, one roles call per player corporation
        member."""
        due = self._due(character_ids)
        results: list[DirectorCheckResult] = []
        for start in range(0, len(due), MAX_AFFILIATION_IDS):
            results += self._check_chunk(due[start : start + MAX_AFFILIATION_IDS])
        return results

    def check_candidates(self, character_ids: Iterable[int]) -> list[DirectorCheckResult]:
        """Check those of these characters that granted the corporation scopes (just
        logged in or added), whatever their cache says."""
        with self.db.session() as session:
            candidates = list(
                session.scalars(
                    select(CorporationDirector.character_id).where(
                        CorporationDirector.character_id.in_(list(character_ids)),
                        CorporationDirector.status != DirectorStatus.NO_SCOPE,
                    )
                )
            )
        return self._check_chunk(candidates) if candidates else []

    def check(self, character_id: int) -> DirectorCheckResult:
        """Check one director now, whatever its cache says (login, add, a 403)."""
        with self.db.session() as session:
            if session.get(CorporationDirector, character_id) is None:
                raise UsageError(
                    f"character {character_id} did not grant the corporation scopes",
                    hint="killsync login --corporation",
                )
        return self._check_chunk([character_id])[0]

    def _due(self, character_ids: Sequence[int] | None) -> list[int]:
        now = self._clock.now()
        expires = CorporationDirector.roles_expires_at
        query = (
            select(CorporationDirector.character_id)
            .join(Character, Character.character_id == CorporationDirector.character_id)
            .where(
                Character.status == CharacterStatus.ACTIVE,
                CorporationDirector.status != DirectorStatus.NO_SCOPE,
                expires.is_(None) | (expires <= now),
            )
            .order_by(CorporationDirector.character_id)
        )
        if character_ids is not None:
            query = query.where(CorporationDirector.character_id.in_(list(character_ids)))
        with self.db.session() as session:
            return list(session.scalars(query))

    def _check_chunk(self, character_ids: Sequence[int]) -> list[DirectorCheckResult]:
        try:
            affiliations = {
                a.character_id: a for a in self.esi.post_character_affiliation(character_ids)
            }
        except EsiError as exc:
            return [self._failed(cid, None, f"affiliation: {exc}") for cid in character_ids]
        return [self._check_one(cid, affiliations.get(cid)) for cid in character_ids]

    def _check_one(
        self, character_id: int, affiliation: AffiliationResult | None
    ) -> DirectorCheckResult:
        if affiliation is None:
            return self._failed(character_id, None, "ESI's affiliation left the character out")
        corporation_id = affiliation.corporation_id
        if is_npc_corporation(corporation_id):
            return self._record(
                character_id,
                corporation_id,
                DirectorStatus.NPC_CORPORATION,
                "NPC corporations have no killmail list",
                self._clock.now() + timedelta(seconds=ROLES_CACHE_S),
            )
        roles = self._fetch_roles(character_id, corporation_id)
        if isinstance(roles, DirectorCheckResult):
            return roles
        expires = roles.expires or self._clock.now() + timedelta(seconds=ROLES_CACHE_S)
        if roles.has(DIRECTOR_ROLE):
            return self._record(character_id, corporation_id, DirectorStatus.USABLE, None, expires)
        return self._record(
            character_id,
            corporation_id,
            DirectorStatus.NO_ROLE,
            f"not a {DIRECTOR_ROLE} of corporation {corporation_id}",
            expires,
        )

    def _fetch_roles(
        self, character_id: int, corporation_id: int
    ) -> RolesResult | DirectorCheckResult:
        """The character's roles, or the check's outcome when ESI would not give them."""
        try:
            return self.esi.fetch_character_roles(
                character_id, self.tokens.access_token(character_id)
            )
        except EsiHttpError as exc:
            if exc.status in (401, 403):  # the token cannot read roles: the scope is gone
                return self._record(
                    character_id, corporation_id, DirectorStatus.NO_SCOPE, f"roles: {exc}", None
                )
            return self._failed(character_id, corporation_id, f"roles: {exc}")
        except KillsyncError as exc:  # ESI down, or the character needs to log in
            return self._failed(character_id, corporation_id, f"roles: {exc}")

    def _failed(
        self, character_id: int, corporation_id: int | None, error: str
    ) -> DirectorCheckResult:
        """ESI could not answer: the state stays, the error is shown, the check retried."""
        retry = self._clock.now() + timedelta(seconds=FAILED_CHECK_RETRY_S)
        with self.db.session() as session:
            director = session.get(CorporationDirector, character_id, with_for_update=True)
            if director is None:
                return DirectorCheckResult(character_id, corporation_id, DirectorStatus.UNCHECKED)
            director.last_error = error[:2000]
            director.roles_expires_at = retry
            return DirectorCheckResult(
                character_id, director.corporation_id, director.status, error
            )

    def _record(
        self,
        character_id: int,
        corporation_id: int,
        status: DirectorStatus,
        reason: str | None,
        expires: datetime | None,
    ) -> DirectorCheckResult:
        """Store a check's outcome; a usable director's corporation becomes tracked."""
        now = self._clock.now()
        with self.db.session() as session:
            director = session.get(CorporationDirector, character_id, with_for_update=True)
            if director is None:  # the character was removed meanwhile
                return DirectorCheckResult(character_id, corporation_id, status, reason)
            before = director.corporation_id
            director.corporation_id = corporation_id
            director.status, director.status_reason = status, reason
            director.roles_checked_at, director.roles_expires_at = now, expires
            director.last_error = None
            tracked = status == DirectorStatus.USABLE and track_corporation(session, corporation_id)
            refresh_corporation_status(
                session, {corporation_id} | ({before} if before is not None else set())
            )
        if tracked:
            self._name_corporation(corporation_id)
        return DirectorCheckResult(character_id, corporation_id, status, reason, tracked)

    def record_forbidden(
        self, character_id: int, corporation_id: int, detail: str
    ) -> DirectorCheckResult:
        """The corporation route answered 403 for this director: decide with a new check
        (roles and affiliation), not ESI's wording; the token is not used for the
        corporation again until the check's answer expires."""
        result = self.check(character_id)
        if result.status == DirectorStatus.USABLE and result.corporation_id == corporation_id:
            # ESI's cached roles still say Director: believe the 403 until they expire,
            # and a day when it says the character left.
            left = "not in the corporation" in detail.lower()
            status = DirectorStatus.NOT_IN_CORPORATION if left else DirectorStatus.NO_ROLE
            wait_s = NOT_IN_CORPORATION_RECHECK_S if left else ROLES_CACHE_S
            return self._record(
                character_id,
                corporation_id,
                status,
                f"ESI answered 403: {detail}"[:2000],
                self._clock.now() + timedelta(seconds=wait_s),
            )
        return result

    def _name_corporation(self, corporation_id: int) -> None:
        """The corporation's name from ESI's names (decoration: a failure leaves it unset)."""
        try:
            names = self.esi.post_universe_names([corporation_id])
        except EsiError:
            return
        with self.db.session() as session:
            corporation = session.get(Corporation, corporation_id)
            for name in names:
                if corporation is not None and name.id == corporation_id:
                    corporation.name = name.name[:100]

    # -- choosing directors -------------------------------------------------------------

    def usable_directors(self, corporation_id: int) -> list[int]:
        """The corporation's usable directors, least recently used first (their checks
        renewed first when due)."""
        self.check_due(self._directors_of(corporation_id))
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(CorporationDirector.character_id)
                    .join(Character, Character.character_id == CorporationDirector.character_id)
                    .where(
                        CorporationDirector.corporation_id == corporation_id,
                        CorporationDirector.status == DirectorStatus.USABLE,
                        Character.status == CharacterStatus.ACTIVE,
                    )
                    .order_by(
                        CorporationDirector.last_used_at.is_not(None),
                        CorporationDirector.last_used_at,
                        CorporationDirector.character_id,
                    )
                )
            )

    def _directors_of(self, corporation_id: int) -> list[int]:
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(CorporationDirector.character_id).where(
                        CorporationDirector.corporation_id == corporation_id
                    )
                )
            )

    def mark_used(self, character_id: int) -> None:
        """A director's token was spent on its corporation's list now (the LRU order)."""
        with self.db.session() as session:
            session.execute(
                update(CorporationDirector)
                .where(CorporationDirector.character_id == character_id)
                .values(last_used_at=self._clock.now())
            )


def track_corporation(session: Session, corporation_id: int) -> bool:
    """Start tracking a player corporation (a no-op when tracked); whether it was new."""
    if is_npc_corporation(corporation_id) or session.get(Corporation, corporation_id) is not None:
        return False
    session.add(Corporation(corporation_id=corporation_id, enabled=True))
    session.flush()
    return True


def refresh_corporation_status(session: Session, corporation_ids: Iterable[int]) -> None:
    """Each corporation is active while it has a usable director of an active character."""
    for corporation_id in corporation_ids:
        corporation = session.get(Corporation, corporation_id)
        if corporation is None:
            continue
        usable = session.scalar(
            select(func.count())
            .select_from(CorporationDirector)
            .join(Character, Character.character_id == CorporationDirector.character_id)
            .where(
                CorporationDirector.corporation_id == corporation_id,
                CorporationDirector.status == DirectorStatus.USABLE,
                Character.status == CharacterStatus.ACTIVE,
            )
        )
        status = CorporationStatus.ACTIVE if usable else CorporationStatus.NO_DIRECTOR
        if corporation.status != status:
            corporation.status = status
            corporation.status_reason = None if usable else "no director with a usable token"


# -- listing and switching --------------------------------------------------------------


def require_corporation(
    session: Session, corporation_id: int, *, for_update: bool = True
) -> Corporation:
    corporation = session.get(Corporation, corporation_id, with_for_update=for_update)
    if corporation is None:
        raise UsageError(
            f"corporation {corporation_id} is not tracked",
            hint="a Director logs in with `killsync login --corporation`",
        )
    return corporation


def require_enabled_corporation(session: Session, corporation_id: int) -> Corporation:
    """A tracked corporation that may be synced; :class:`CorporationDisabled` when an
    operator turned it off."""
    corporation = require_corporation(session, corporation_id, for_update=False)
    if not corporation.enabled:
        raise CorporationDisabled(
            f"corporation {corporation_id} is disabled",
            hint=f"killsync corporations enable {corporation_id}",
        )
    return corporation


def set_corporation_enabled(db: Database, corporation_id: int, *, enabled: bool) -> str:
    """Turn a corporation's sync off or on again; returns its name (or id)."""
    with db.session() as session:
        corporation = require_corporation(session, corporation_id)
        corporation.enabled = enabled
        return corporation.name or str(corporation_id)


def list_corporations(db: Database) -> list[CorporationInfo]:
    """Every tracked corporation with its directors and killmail counts (local only)."""
    with db.session() as session:
        killmails = count_by(session, CorporationKillmail.corporation_id)
        totals: Counter[int | None] = Counter()
        usable: Counter[int | None] = Counter()
        rows = session.execute(
            select(CorporationDirector.corporation_id, CorporationDirector.status, Character.status)
            .join(Character, Character.character_id == CorporationDirector.character_id)
            .where(CorporationDirector.corporation_id.is_not(None))
        )
        for corporation_id, status, character_status in rows:
            totals[corporation_id] += 1
            if status == DirectorStatus.USABLE and character_status == CharacterStatus.ACTIVE:
                usable[corporation_id] += 1
        corporations = session.scalars(
            select(Corporation).order_by(Corporation.name, Corporation.corporation_id)
        ).all()
        return [
            CorporationInfo(
                c.corporation_id,
                c.name,
                c.enabled,
                c.status,
                c.status_reason,
                usable[c.corporation_id],
                totals[c.corporation_id],
                c.last_sync_at,
                killmails.get(c.corporation_id, 0),
                c.last_error,
            )
            for c in corporations
        ]


def director_states(session: Session) -> dict[int, DirectorInfo]:
    """Every director candidate's state by character id (for `users list`)."""
    return {
        d.character_id: DirectorInfo(
            d.corporation_id, d.status, d.status_reason or d.last_error, d.roles_expires_at
        )
        for d in session.scalars(select(CorporationDirector))
    }
