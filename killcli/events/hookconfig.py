"""Configured webhooks: add, edit, list and remove them; the one row update.

A webhook's URL carries a secret: it is stored encrypted and shown masked. What a webhook
posts (its owner, filters, fresh-only age and delay) is checked here, before it is stored,
and decided at delivery by :mod:`killcli.events.filters`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, case, delete, insert, select, update

from killcli.db import Database
from killcli.errors import InputError, UsageError
from killcli.events.filters import KillFilter, check_selection, dump_filters, load_filters
from killcli.events.hookurl import mask_url, parse_kind, validate_url
from killcli.events.outbox import WEBHOOKS, latest_event_id
from killcli.kills import Owner
from killcli.sso.crypto import TokenCipher

DEFAULT_MAX_AGE_S = 3600
MAX_DELAY_S = 86_400  # a day: the outbox keeps events a week (`events prune`)


@dataclass(frozen=True)
class WebhookInfo:
    """A webhook as users see it: the URL masked."""

    id: int
    kind: str
    url: str
    character_id: int | None
    corporation_id: int | None
    max_age_s: int
    delay_s: int
    filters: dict[str, Any] | None
    cursor_event_id: int
    enabled: bool
    blocked_until: datetime | None
    last_error: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """What it posts, in a few words (`webhooks add`, `edit` and `list`)."""
        parts = [f"kills younger than {self.max_age_s} s"]
        if self.character_id is not None:
            parts.append(f"character {self.character_id}")
        if self.corporation_id is not None:
            parts.append(f"corporation {self.corporation_id}")
        parts += [f.describe() for f in load_filters(self.filters)]
        if self.delay_s:
            parts.append(f"delayed {self.delay_s} s")
        return ", ".join(parts)


def _info(row: Row[Any], cipher: TokenCipher) -> WebhookInfo:
    try:
        url = mask_url(row.kind, cipher.decrypt(row.url_enc))
    except InputError:
        url = "<cannot decrypt: secret key changed?>"
    return WebhookInfo(
        id=row.id,
        kind=row.kind,
        url=url,
        character_id=row.character_id,
        corporation_id=row.corporation_id,
        max_age_s=row.max_age_s,
        delay_s=row.delay_s,
        filters=row.filters,
        cursor_event_id=row.cursor_event_id,
        enabled=row.enabled,
        blocked_until=row.blocked_until,
        last_error=row.last_error,
        created_at=row.created_at,
    )


def add_webhook(
    db: Database,
    cipher: TokenCipher,
    kind: str,
    url: str,
    *,
    character_id: int | None = None,
    corporation_id: int | None = None,
    max_age_s: int = DEFAULT_MAX_AGE_S,
    delay_s: int = 0,
    filters: Sequence[KillFilter] = (),
    allow_insecure: bool = False,
) -> WebhookInfo:
    """Validate, encrypt and store a webhook; it starts after the newest event."""
    webhook_kind = parse_kind(kind)
    clean = validate_url(webhook_kind, url, allow_insecure=allow_insecure)
    _check(Owner.of(character_id, corporation_id), filters, max_age_s, delay_s)
    cursor = latest_event_id(db)
    with db.session() as session:
        new_id = session.execute(
            insert(WEBHOOKS)
            .values(
                kind=webhook_kind.value,
                url_enc=cipher.encrypt(clean),
                character_id=character_id,
                corporation_id=corporation_id,
                max_age_s=max_age_s,
                delay_s=delay_s,
                filters=dump_filters(filters),
                cursor_event_id=cursor,
                enabled=True,
            )
            .returning(WEBHOOKS.c.id)
        ).scalar_one()
    return get_webhook(db, cipher, new_id)


def _check(
    owner: Owner | None, filters: Sequence[KillFilter], max_age_s: int, delay_s: int
) -> None:
    if max_age_s <= 0:
        raise UsageError(f"--max-age must be a positive number of seconds, got {max_age_s}")
    if not 0 <= delay_s <= MAX_DELAY_S:
        raise UsageError(f"--delay must be between 0 and {MAX_DELAY_S} seconds, got {delay_s}")
    check_selection(owner, filters)


_KEEP: Any = object()  # `edit_webhook`: leave this setting as it is


def edit_webhook(
    db: Database,
    cipher: TokenCipher,
    webhook_id: int,
    *,
    owner: Owner | None = _KEEP,
    max_age_s: int = _KEEP,
    delay_s: int = _KEEP,
    filters: Sequence[KillFilter] = _KEEP,
) -> WebhookInfo:
    """Change what a webhook posts and when; settings not given stay as they are."""
    row = webhook_row(db, webhook_id)
    if owner is _KEEP:
        owner = Owner.of(row.character_id, row.corporation_id)
    new_filters = load_filters(row.filters) if filters is _KEEP else list(filters)
    new_age = row.max_age_s if max_age_s is _KEEP else max_age_s
    new_delay = row.delay_s if delay_s is _KEEP else delay_s
    _check(owner, new_filters, new_age, new_delay)
    save_webhook(
        db,
        webhook_id,
        character_id=owner.character_id if owner else None,
        corporation_id=owner.corporation_id if owner else None,
        max_age_s=new_age,
        delay_s=new_delay,
        filters=dump_filters(new_filters),
    )
    return get_webhook(db, cipher, webhook_id)


def list_webhooks(db: Database, cipher: TokenCipher) -> list[WebhookInfo]:
    with db.session() as session:
        rows = session.execute(select(WEBHOOKS).order_by(WEBHOOKS.c.id)).all()
    return [_info(row, cipher) for row in rows]


def find_webhook_row(db: Database, webhook_id: int) -> Row[Any] | None:
    with db.session() as session:
        return session.execute(select(WEBHOOKS).where(WEBHOOKS.c.id == webhook_id)).first()


def webhook_row(db: Database, webhook_id: int) -> Row[Any]:
    row = find_webhook_row(db, webhook_id)
    if row is None:
        raise UsageError(f"no webhook with id {webhook_id}", hint="see `killsync webhooks list`")
    return row


def get_webhook(db: Database, cipher: TokenCipher, webhook_id: int) -> WebhookInfo:
    return _info(webhook_row(db, webhook_id), cipher)


def remove_webhook(db: Database, webhook_id: int) -> None:
    """Delete a webhook; ``UsageError`` when there is none with that id."""
    with db.session() as session:
        deleted = (
            session.connection()
            .execute(delete(WEBHOOKS).where(WEBHOOKS.c.id == webhook_id))
            .rowcount
        )
    if not deleted:
        raise UsageError(f"no webhook with id {webhook_id}", hint="see `killsync webhooks list`")


def save_webhook(db: Database, webhook_id: int, cursor: int | None = None, **values: Any) -> None:
    """Update a webhook; the cursor only ever moves forward."""
    if cursor is not None:
        values["cursor_event_id"] = case(
            (WEBHOOKS.c.cursor_event_id < cursor, cursor), else_=WEBHOOKS.c.cursor_event_id
        )
    with db.session() as session:
        session.execute(update(WEBHOOKS).where(WEBHOOKS.c.id == webhook_id).values(**values))
