"""Tracked characters and their tokens: add, refresh (once, under a row lock), mark.

Refresh tokens and access tokens are stored encrypted (Fernet). A refresh holds the
character's row lock (``SELECT .. FOR UPDATE`` on PostgreSQL, the write lock of
``BEGIN IMMEDIATE`` on SQLite) while it spends the refresh token: two workers that need
the same token at once refresh it once, and the second reads the first one's result.

**The rotated refresh token is durable before anything that can fail.** The SSO kills the
old refresh token when it answers, so the transaction that holds the lock commits the
answer (both tokens, encrypted) as soon as it arrives, with no work in between but parsing
and encrypting. The access token is stored *pending* (no expiry) until it is verified
(signature, key set, clocks), outside that transaction; a second short transaction then
records the result. A verification that fails keeps the new tokens and the character
active, with ``last_error`` saying why (``TokenUnverified``, retried later); a worker that
finds a pending token verifies it instead of spending the refresh token again.

``invalid_grant`` & co, and a new token without the killmail scope ("scope removed"), mark
the character *needs login* with the reason and time; it is not refreshed again until it
logs in again.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.corporations import CORPORATION_SCOPES, DirectorInfo, director_states, note_scopes
from killcli.db import Database
from killcli.db.models import Character, CharacterKillmail, CharacterStatus, PendingKillmail
from killcli.db.store import count_by
from killcli.db.types import utcnow
from killcli.errors import (
    InputError,
    KillsyncError,
    NeedsLogin,
    SsoError,
    TokenRejected,
    TokenUnverified,
    UsageError,
)
from killcli.sso.client import SsoClient
from killcli.sso.crypto import TokenCipher
from killcli.sso.models import IssuedTokens, TokenSet
from killcli.tokenfile import TokenLine

KILLMAIL_SCOPE = "esi-killmails.read_killmails.v1"
DEFAULT_SCOPES = (KILLMAIL_SCOPE,)
CORPORATION_LOGIN_SCOPES = (KILLMAIL_SCOPE, *CORPORATION_SCOPES)  # `login --corporation`
REFRESH_MARGIN_S = 120.0  # refresh this long before expiry, not on a 401
SCOPE_REMOVED = "scope removed"  # the needs-login reason when a refresh lost the scope


@dataclass(frozen=True)
class AddResult:
    character_id: int
    name: str
    created: bool
    owner_changed: bool


@dataclass(frozen=True)
class RejectedToken:
    """A token of a token file that could not be added, and why."""

    line: int
    reason: str


@dataclass
class TokenImportResult:
    """What `killsync users import` did with a token file."""

    added: int = 0
    updated: int = 0
    rejected: list[RejectedToken] = field(default_factory=list)
    character_ids: list[int] = field(default_factory=list)  # added or updated

    def as_dict(self) -> dict[str, int]:
        """The ``users.import`` JSON payload."""
        return {"added": self.added, "updated": self.updated, "rejected": len(self.rejected)}


@dataclass(frozen=True)
class RefreshResult:
    character_id: int
    name: str
    ok: bool
    expires_at: datetime | None = None
    reason: str | None = None
    retryable: bool = False  #: not ok, but the new tokens are kept: a later refresh works

    def as_dict(self) -> dict[str, Any]:
        """One character of the ``refresh`` JSON payload."""
        return asdict(self)


@dataclass(frozen=True)
class _Issued:
    """A token answer committed as pending, and the token version that commit wrote."""

    tokens: IssuedTokens
    version: int


@dataclass(frozen=True)
class _Fresh:
    access_token: str = field(repr=False)
    expires_at: datetime | None
    name: str


@dataclass(frozen=True)
class CharacterInfo:
    character_id: int
    name: str
    status: CharacterStatus
    status_reason: str | None
    scopes: tuple[str, ...]
    access_expires_at: datetime | None
    last_sync_at: datetime | None
    killmails: int
    pending: int
    last_error: str | None
    director: DirectorInfo | None = None  # granted the corporation scopes: its corp state


class Accounts:
    """The character and token service; thread-safe, one per process."""

    def __init__(
        self,
        db: Database,
        sso: SsoClient,
        cipher: TokenCipher,
        *,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.sso = sso
        self.cipher = cipher
        self._clock = clock or SYSTEM_CLOCK  # this host's clock, the one token expiries are on
        self.refresh_margin = timedelta(seconds=refresh_margin_s)
        self._locks: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    # -- adding characters --------------------------------------------------------------

    def import_tokens(
        self,
        tokens: Iterable[TokenLine],
        on_rejected: Callable[[RejectedToken], None] = lambda rejected: None,
    ) -> TokenImportResult:
        """Add every token of a token file; one that fails is reported and skipped."""
        result = TokenImportResult()
        for line in tokens:
            try:
                added = self.add_refresh_token(line.token)
            except KillsyncError as exc:
                rejected = RejectedToken(line.line, str(exc))
                result.rejected.append(rejected)
                on_rejected(rejected)
                continue
            result.character_ids.append(added.character_id)
            if added.created:
                result.added += 1
            else:
                result.updated += 1
        return result

    def add_refresh_token(self, refresh_token: str) -> AddResult:
        """Validate a refresh token by refreshing it once, then store the character."""
        token = refresh_token.strip()
        if not token or len(token) > 4096 or not token.isprintable():
            raise InputError("that is not a refresh token (empty, too long or not text)")
        try:
            tokens = self.sso.refresh(token)
        except NeedsLogin as exc:
            raise InputError(f"SSO refused the refresh token ({exc.reason})") from exc
        return self.store_login(tokens)

    def store_login(self, tokens: TokenSet) -> AddResult:
        """Store (or update) a character from a fresh token set (login or add)."""
        claims = tokens.claims
        if KILLMAIL_SCOPE not in claims.scopes:
            raise UsageError(
                f"{claims.name} ({claims.character_id}) did not grant {KILLMAIL_SCOPE}",
                hint="log in again and tick that scope",
            )
        now = self._clock.now()
        with self.db.session() as session:
            character = session.get(Character, claims.character_id, with_for_update=True)
            created = character is None
            owner_changed = not created and character.owner_hash != claims.owner_hash  # type: ignore[union-attr]
            if character is None:
                character = Character(character_id=claims.character_id, token_version=0)
                session.add(character)
            if owner_changed:  # sold: the previous owner's list state is not ours
                character.list_etag = None
                character.list_expires_at = None
            character.name = claims.name
            character.owner_hash = claims.owner_hash
            character.scopes = " ".join(sorted(claims.scopes))
            self._put_tokens(character, tokens)
            character.status, character.status_reason = CharacterStatus.ACTIVE, None
            character.status_changed_at = now
            session.flush()  # the director row refers to the character
            note_scopes(session, claims.character_id, claims.scopes)
        return AddResult(claims.character_id, claims.name, created, owner_changed)

    # -- tokens -------------------------------------------------------------------------

    def access_token(self, character_id: int) -> str:
        """A valid access token, refreshed ahead of expiry (once, under the row lock)."""
        with self._lock_for(character_id):
            fresh = self._fresh_access_token(character_id)
            if fresh is not None:
                return fresh
            return self._refresh_locked(character_id).access_token

    def refresh(self, character_id: int) -> RefreshResult:
        """Refresh now (the `refresh-token` command); needs-login and a verification that
        must be retried are results, not raises."""
        with self._lock_for(character_id):
            try:
                fresh = self._refresh_locked(character_id, force=True)
            except NeedsLogin as exc:
                return RefreshResult(
                    character_id, self._name(character_id), ok=False, reason=exc.message
                )
            except TokenUnverified as exc:
                return RefreshResult(
                    character_id,
                    self._name(character_id),
                    ok=False,
                    reason=exc.message,
                    retryable=True,
                )
            return RefreshResult(character_id, fresh.name, ok=True, expires_at=fresh.expires_at)

    def _fresh_access_token(self, character_id: int) -> str | None:
        with self.db.session() as session:
            character = require_character(session, character_id)
            return self._usable(character)

    def _usable(self, character: Character) -> str | None:
        return self.usable_access_token(character.access_token_enc, character.access_expires_at)

    def usable_access_token(self, token_enc: str | None, expires: datetime | None) -> str | None:
        """The stored access token, decrypted, if it is verified (it has an expiry) and
        outlives the refresh margin; else None (:meth:`access_token` refreshes it)."""
        if token_enc and expires and expires - self.refresh_margin > self._clock.now():
            return self.cipher.decrypt(token_enc)
        return None

    def _refresh_locked(self, character_id: int, *, force: bool = False) -> _Fresh:
        step = self._rotate(character_id, force=force)
        if isinstance(step, _Fresh):
            return step
        return self._settle(character_id, step, self._verify(step.tokens))

    def _rotate(self, character_id: int, *, force: bool) -> _Fresh | _Issued:
        """Under the row lock: a usable or pending token, else spend the refresh token.

        The SSO's answer is committed when this transaction ends, right after it arrived.
        """
        outcome: _Fresh | _Issued | KillsyncError
        with self.db.session() as session:
            character = require_character(session, character_id, lock=True)
            self._require_active(character)
            stored = None if force else self._stored(character)
            outcome = stored if stored is not None else self._spend(character)
        if isinstance(outcome, KillsyncError):
            raise outcome
        return outcome

    def _stored(self, character: Character) -> _Fresh | KillsyncError | None:
        """What the locked row already offers: a usable token (another worker refreshed while
        we waited), a pending one verified now, or None (spend the refresh token)."""
        current = self._usable(character)
        if current is not None:
            return _Fresh(current, character.access_expires_at, character.name)
        pending = self._pending(character)
        if pending is None:
            return None
        outcome = self._verify(pending)
        if isinstance(outcome, TokenRejected) or (
            isinstance(outcome, TokenSet)
            and outcome.expires_at - self.refresh_margin <= self._clock.now()
        ):
            return None  # expired, expiring or bad, unlike the grant behind it: refresh anew
        return self._apply(character, outcome)

    def _spend(self, character: Character) -> _Issued | NeedsLogin:
        """Trade the refresh token at the SSO and write the answer, pending verification."""
        refresh_token = self.cipher.decrypt(character.refresh_token_enc or "")
        try:
            issued = self.sso.request_refresh(refresh_token)
        except NeedsLogin as exc:
            self._mark_needs_login(character, exc.reason)
            return self._needs_login(character, exc.reason, cause=exc)
        # Nothing but encryption between the SSO's answer and the commit (see the module doc).
        character.refresh_token_enc = self.cipher.encrypt(issued.refresh_token)
        character.access_token_enc = (
            None if issued.access_token is None else self.cipher.encrypt(issued.access_token)
        )
        character.access_expires_at = None  # pending: not usable until verified
        character.token_version = (character.token_version or 0) + 1
        return _Issued(issued, character.token_version)

    def _verify(self, tokens: IssuedTokens) -> TokenSet | SsoError:
        """Verify a token answer (may fetch the key set); the failure as a value."""
        try:
            return self.sso.verify(tokens)
        except SsoError as exc:
            return exc

    def _settle(self, character_id: int, issued: _Issued, outcome: TokenSet | SsoError) -> _Fresh:
        """Record a verification on the row it came from (re-locked), unless the row moved on."""
        result: _Fresh | KillsyncError
        with self.db.session() as session:
            character = require_character(session, character_id, lock=True)
            still_ours = character.token_version == issued.version
            if still_ours and (
                character.access_expires_at is None or not isinstance(outcome, SsoError)
            ):
                result = self._apply(character, outcome)
            else:  # refreshed again, or verified by a worker that found it pending
                result = self._unrecorded(character, outcome)
        if isinstance(result, KillsyncError):
            raise result
        return result

    def _apply(self, character: Character, outcome: TokenSet | SsoError) -> _Fresh | KillsyncError:
        """Write a verification's outcome on the locked row; the result or the error."""
        if isinstance(outcome, SsoError):
            return self._unverified(character, outcome.message)
        claims = outcome.claims
        if claims.character_id != character.character_id:
            return self._unverified(character, f"the token is for character {claims.character_id}")
        character.scopes = " ".join(sorted(claims.scopes))  # never stale: from each token
        session = object_session(character)  # the locked row's: a director may lose its scope
        if session is not None:
            note_scopes(session, character.character_id, claims.scopes)
        if KILLMAIL_SCOPE not in claims.scopes:
            self._mark_needs_login(character, SCOPE_REMOVED)
            character.last_error = f"SSO: the new token no longer grants {KILLMAIL_SCOPE}"
            return self._needs_login(
                character,
                SCOPE_REMOVED,
                detail=f"{SCOPE_REMOVED} ({KILLMAIL_SCOPE} is no longer granted)",
            )
        character.name = claims.name
        character.access_expires_at = outcome.expires_at
        note = self.sso.clock_note()  # a skewed host clock is worth an operator's look
        character.last_error = None if note is None else f"SSO: {note}"
        return _Fresh(outcome.access_token, outcome.expires_at, claims.name)

    def _unrecorded(
        self, character: Character, outcome: TokenSet | SsoError
    ) -> _Fresh | KillsyncError:
        """The result of a verification whose row moved on (nothing is written)."""
        if isinstance(outcome, TokenSet) and outcome.claims.character_id == character.character_id:
            return _Fresh(outcome.access_token, outcome.expires_at, outcome.claims.name)
        current = self._usable(character)
        if current is not None:
            return _Fresh(current, character.access_expires_at, character.name)
        detail = outcome.message if isinstance(outcome, SsoError) else "wrong character"
        return _unverified_error(character, detail)

    def _unverified(self, character: Character, detail: str) -> TokenUnverified:
        """Keep the new tokens pending, say why in ``last_error``: a retry can succeed."""
        character.last_error = (
            f"SSO: new tokens stored, access token not verified yet (will retry): {detail}"
        )
        return _unverified_error(character, detail)

    def _pending(self, character: Character) -> IssuedTokens | None:
        """A stored access token not verified yet (stored without an expiry), if any."""
        if not character.access_token_enc or character.access_expires_at is not None:
            return None
        return IssuedTokens(
            access_token=self.cipher.decrypt(character.access_token_enc),
            refresh_token=self.cipher.decrypt(character.refresh_token_enc or ""),
            expires_in_s=None,
            requested_at=self._clock.now(),
        )

    def _require_active(self, character: Character) -> None:
        if character.status != CharacterStatus.ACTIVE or not character.refresh_token_enc:
            raise self._needs_login(character, character.status_reason or character.status)

    @staticmethod
    def _needs_login(
        character: Character,
        reason: str,
        *,
        detail: str | None = None,
        cause: NeedsLogin | None = None,
    ) -> NeedsLogin:
        error = NeedsLogin(
            f"{character.name} ({character.character_id}) needs to log in "
            f"again: {detail or reason}",
            reason=reason,
            character_id=character.character_id,
        )
        error.__cause__ = cause
        return error

    def _put_tokens(self, character: Character, tokens: TokenSet) -> None:
        character.refresh_token_enc = self.cipher.encrypt(tokens.refresh_token)
        character.access_token_enc = self.cipher.encrypt(tokens.access_token)
        character.access_expires_at = tokens.expires_at
        character.token_version = (character.token_version or 0) + 1

    def _mark_needs_login(self, character: Character, reason: str) -> None:
        character.status = CharacterStatus.NEEDS_LOGIN
        character.status_reason = reason
        character.status_changed_at = self._clock.now()
        character.access_token_enc = None
        character.access_expires_at = None
        character.last_error = f"SSO: {reason}"

    # -- listing and removal ------------------------------------------------------------

    def remove(self, character_id: int, *, revoke: bool = False) -> str:
        """Stop tracking a character (its killmails stay); optionally revoke its token."""
        name, refresh_enc = remove_character(self.db, character_id)
        if revoke and refresh_enc:
            self.sso.revoke(self.cipher.decrypt(refresh_enc))
        return name

    # -- helpers ------------------------------------------------------------------------

    def _lock_for(self, character_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks[character_id]

    def _name(self, character_id: int) -> str:
        with self.db.session() as session:
            return require_character(session, character_id).name


def _unverified_error(character: Character, detail: str) -> TokenUnverified:
    return TokenUnverified(
        f"{character.name} ({character.character_id}): the SSO's new access "
        f"token could not be verified: {detail}",
        character_id=character.character_id,
    )


def require_character(session: Session, character_id: int, *, lock: bool = False) -> Character:
    """The tracked character, or a usage error naming the id."""
    character = session.get(Character, character_id, with_for_update=lock)
    if character is None:
        raise UsageError(
            f"character {character_id} is not tracked", hint="see `killsync users list`"
        )
    return character


def set_enabled(db: Database, character_id: int, *, enabled: bool) -> str:
    """Disable a character (never queued) or enable a disabled one; returns its name.

    A character that needs to log in stays so: only a login gives it a token again.
    """
    with db.session() as session:
        character = require_character(session, character_id, lock=True)
        if enabled and character.status == CharacterStatus.NEEDS_LOGIN:
            raise UsageError(
                f"{character.name} ({character_id}) needs to log in again, "
                "enabling cannot fix that",
                hint="killsync login",
            )
        if enabled != (character.status == CharacterStatus.ACTIVE):
            character.status = CharacterStatus.ACTIVE if enabled else CharacterStatus.DISABLED
            character.status_reason = None if enabled else "disabled by the operator"
            character.status_changed_at = utcnow()
        return character.name


def remove_character(db: Database, character_id: int) -> tuple[str, str | None]:
    """Delete a tracked character; returns its name and encrypted refresh token."""
    with db.session() as session:
        character = require_character(session, character_id, lock=True)
        session.delete(character)
        return character.name, character.refresh_token_enc


def list_characters(db: Database) -> list[CharacterInfo]:
    """Every tracked character with its killmail and pending counts (no SSO needed)."""
    with db.session() as session:
        killmails = count_by(session, CharacterKillmail.character_id)
        pending = count_by(session, PendingKillmail.character_id)
        rows = session.scalars(select(Character).order_by(Character.name)).all()
        directors = director_states(session)
        return [
            CharacterInfo(
                c.character_id,
                c.name,
                c.status,
                c.status_reason,
                tuple(c.scopes.split()),
                c.access_expires_at,
                c.last_sync_at,
                killmails.get(c.character_id, 0),
                pending.get(c.character_id, 0),
                c.last_error,
                directors.get(c.character_id),
            )
            for c in rows
        ]


def info_as_dict(info: CharacterInfo) -> dict[str, Any]:
    """A JSON-ready row for `users list --json`."""
    return {
        "character_id": info.character_id,
        "name": info.name,
        "status": info.status,
        "status_reason": info.status_reason,
        "scopes": list(info.scopes),
        "access_expires_at": info.access_expires_at,
        "last_sync_at": info.last_sync_at,
        "killmails": info.killmails,
        "pending": info.pending,
        "last_error": info.last_error,
        "corporation": director_as_dict(info.director),
    }


def director_as_dict(director: DirectorInfo | None) -> dict[str, Any]:
    """A character's corporation state in `users list --json`: all null for a character
    that did not grant the corporation scopes (the shape stays the same)."""
    return {
        "corporation_id": None if director is None else director.corporation_id,
        "status": None if director is None else director.status,
        "status_reason": None if director is None else director.status_reason,
        "roles_expires_at": None if director is None else director.roles_expires_at,
    }
