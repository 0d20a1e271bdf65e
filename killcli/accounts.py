"""Tracked characters and their tokens: add, refresh (once, under a row lock), mark.

Refresh tokens and access tokens are stored encrypted (Fernet). A refresh stores the
rotated refresh token in the same transaction as the new access token, while holding the
character's row lock (``SELECT .. FOR UPDATE`` on PostgreSQL, the write lock of
``BEGIN IMMEDIATE`` on SQLite): two workers that need the same token at once refresh it
once, and the second reads the first one's result. ``invalid_grant`` & co mark the
character *needs login* with the reason and time; it is not refreshed again until it
logs in again.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from killcli.db import Database
from killcli.db.models import Character, CharacterKillmail, PendingKillmail
from killcli.db.types import utcnow
from killcli.errors import InputError, NeedsLogin, SsoError, UsageError
from killcli.sso.client import SsoClient
from killcli.sso.crypto import TokenCipher
from killcli.sso.models import TokenSet

KILLMAIL_SCOPE = "esi-killmails.read_killmails.v1"
DEFAULT_SCOPES = (KILLMAIL_SCOPE,)
REFRESH_MARGIN_S = 120.0  # refresh this long before expiry, not on a 401


@dataclass(frozen=True)
class AddResult:
    character_id: int
    name: str
    created: bool
    owner_changed: bool


@dataclass(frozen=True)
class RefreshResult:
    character_id: int
    name: str
    ok: bool
    expires_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _Fresh:
    access_token: str = field(repr=False)
    expires_at: datetime | None
    name: str


@dataclass(frozen=True)
class CharacterInfo:
    character_id: int
    name: str
    status: str
    status_reason: str | None
    scopes: tuple[str, ...]
    access_expires_at: datetime | None
    last_sync_at: datetime | None
    killmails: int
    pending: int
    last_error: str | None


class Accounts:
    """The character and token service; thread-safe, one per process."""

    def __init__(self, db: Database, sso: SsoClient, cipher: TokenCipher, *,
                 refresh_margin_s: float = REFRESH_MARGIN_S) -> None:
        self.db = db
        self.sso = sso
        self.cipher = cipher
        self.refresh_margin = timedelta(seconds=refresh_margin_s)
        self._locks: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    # -- adding characters --------------------------------------------------------------

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
            raise UsageError(f"{claims.name} ({claims.character_id}) did not grant "
                             f"{KILLMAIL_SCOPE}", hint="log in again and tick that scope")
        now = utcnow()
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
            character.status, character.status_reason = "active", None
            character.status_changed_at = now
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
        """Refresh now (the `refresh-token` command); needs-login is a result, not a raise."""
        with self._lock_for(character_id):
            try:
                fresh = self._refresh_locked(character_id, force=True)
            except NeedsLogin as exc:
                name = self._name(character_id)
                return RefreshResult(character_id, name, ok=False, reason=exc.message)
            return RefreshResult(character_id, fresh.name, ok=True, expires_at=fresh.expires_at)

    def _fresh_access_token(self, character_id: int) -> str | None:
        with self.db.session() as session:
            character = require_character(session, character_id)
            return self._usable(character)

    def _usable(self, character: Character) -> str | None:
        expires = character.access_expires_at
        if character.access_token_enc and expires and expires - self.refresh_margin > utcnow():
            return self.cipher.decrypt(character.access_token_enc)
        return None

    def _refresh_locked(self, character_id: int, *, force: bool = False) -> _Fresh:
        failure: NeedsLogin | None = None
        with self.db.session() as session:
            character = require_character(session, character_id, lock=True)
            if character.status != "active" or not character.refresh_token_enc:
                raise NeedsLogin(f"{character.name} ({character_id}) needs to log in again: "
                                 f"{character.status_reason or character.status}",
                                 reason=character.status_reason or character.status,
                                 character_id=character_id)
            current = None if force else self._usable(character)
            if current is not None:  # another worker refreshed while we waited for the lock
                return _Fresh(current, character.access_expires_at, character.name)
            try:
                tokens = self.sso.refresh(self.cipher.decrypt(character.refresh_token_enc))
                if tokens.claims.character_id != character_id:
                    raise SsoError(f"SSO returned a token for character "
                                   f"{tokens.claims.character_id}, not {character_id}")
                self._put_tokens(character, tokens)
                character.last_error = None
            except NeedsLogin as exc:
                failure = exc
                self._mark_needs_login(character, exc.reason)
        if failure is not None:
            raise NeedsLogin(f"{character.name} ({character_id}) needs to log in again: "
                             f"{failure.reason}", reason=failure.reason,
                             character_id=character_id) from failure
        return _Fresh(tokens.access_token, tokens.expires_at, tokens.claims.name)

    def _put_tokens(self, character: Character, tokens: TokenSet) -> None:
        character.refresh_token_enc = self.cipher.encrypt(tokens.refresh_token)
        character.access_token_enc = self.cipher.encrypt(tokens.access_token)
        character.access_expires_at = tokens.expires_at
        character.token_version = (character.token_version or 0) + 1

    def _mark_needs_login(self, character: Character, reason: str) -> None:
        character.status = "needs_login"
        character.status_reason = reason
        character.status_changed_at = utcnow()
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


def require_character(session: Session, character_id: int, *, lock: bool = False
                      ) -> Character:
    """The tracked character, or a usage error naming the id."""
    character = session.get(Character, character_id, with_for_update=lock)
    if character is None:
        raise UsageError(f"character {character_id} is not tracked",
                         hint="see `killsync users list`")
    return character


def set_enabled(db: Database, character_id: int, *, enabled: bool) -> str:
    """Disable a character (never queued) or enable a disabled one; returns its name.

    A character that needs to log in stays so: only a login gives it a token again.
    """
    with db.session() as session:
        character = require_character(session, character_id, lock=True)
        if enabled and character.status == "needs_login":
            raise UsageError(f"{character.name} ({character_id}) needs to log in again, "
                             "enabling cannot fix that", hint="killsync login")
        if enabled != (character.status == "active"):
            character.status = "active" if enabled else "disabled"
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
        killmails = dict(session.execute(
            select(CharacterKillmail.character_id, func.count())
            .group_by(CharacterKillmail.character_id)).all())
        pending = dict(session.execute(
            select(PendingKillmail.character_id, func.count())
            .group_by(PendingKillmail.character_id)).all())
        rows = session.scalars(select(Character).order_by(Character.name)).all()
        return [CharacterInfo(c.character_id, c.name, c.status, c.status_reason,
                              tuple(c.scopes.split()), c.access_expires_at, c.last_sync_at,
                              killmails.get(c.character_id, 0),
                              pending.get(c.character_id, 0), c.last_error) for c in rows]


def info_as_dict(info: CharacterInfo) -> dict[str, Any]:
    """A JSON-ready row for `users list --json`."""
    return {
        "character_id": info.character_id, "name": info.name, "status": info.status,
        "status_reason": info.status_reason, "scopes": list(info.scopes),
        "access_expires_at": info.access_expires_at, "last_sync_at": info.last_sync_at,
        "killmails": info.killmails, "pending": info.pending, "last_error": info.last_error,
    }
