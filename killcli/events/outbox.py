"""Reading and pruning the events outbox (the ``events`` table).

The sync engine appends ``killmail.saved`` rows in the same transaction as the killmails
(:mod:`killcli.sync.events`). Readers follow the table by id: ``killsync watch`` on the
embedded default, the webhook deliverer (one ``cursor_event_id`` per webhook) and the
RabbitMQ relay (rows with ``published_at IS NULL``).

Gaps. Ids come from a sequence (PostgreSQL) or the rowid (SQLite). On SQLite writers are
serialized, so ids become visible in order. On PostgreSQL two transactions can take ids
10 and 11 and commit 11 first: a reader that moved its cursor to 11 would never see 10.
:func:`iter_events` therefore stops at a gap in the ids until the row after the gap is
``settle_s`` old; a gap that old is a rolled-back transaction, not one still committing
(the event insert is the last statement of a save, milliseconds before its commit).

Pruning. Run it from cron, e.g. daily::

    15 4 * * *  killsync events prune --older-than 7d

It deletes events older than the retention, and events already published to RabbitMQ that
every enabled webhook has passed. It never deletes the newest event: SQLite hands out
``max(id) + 1``, so deleting the newest rows would let ids be reused and readers whose
cursor is past them would silently skip the new events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, or_, select
from sqlalchemy.orm import Session

from killcli.db import Database
from killcli.db.models import Event, Webhook, table_of
from killcli.db.types import utcnow

EVENTS = table_of(Event)
WEBHOOKS = table_of(Webhook)
EXCHANGE = "killsync.events"  # the fanout exchange fleets publish events to
GAP_SETTLE_S = 15.0
DEFAULT_LIMIT = 100
DEFAULT_RETENTION = timedelta(days=7)


@dataclass(frozen=True)
class OutboxEvent:
    """One event as readers see it (from the outbox or from a broker message)."""

    id: int
    event_type: str
    payload: dict[str, Any]
    created_at: datetime | None = None
    published_at: datetime | None = None


@dataclass(frozen=True)
class PruneResult:
    """How many events ``prune`` deleted and how many are left."""

    deleted: int
    remaining: int


def event_from_row(row: Row[Any]) -> OutboxEvent:
    return OutboxEvent(
        id=row.id,
        event_type=row.event_type,
        payload=dict(row.payload),
        created_at=row.created_at,
        published_at=row.published_at,
    )


def iter_events(
    db: Database,
    after_id: int,
    limit: int = DEFAULT_LIMIT,
    *,
    settle_s: float = GAP_SETTLE_S,
    now: datetime | None = None,
) -> Iterator[OutboxEvent]:
    """Events with ``id > after_id`` in id order, at most ``limit``, all types.

    The rows are read in one short transaction before the first is yielded, so a slow
    consumer (a webhook post) never holds the database. Reading stops before an unsettled
    gap (see the module docstring). Consumers should move their cursor past every event,
    including types they ignore.
    """
    with db.session() as session:
        rows = session.execute(
            select(EVENTS).where(EVENTS.c.id > after_id).order_by(EVENTS.c.id).limit(limit)
        ).all()
    cutoff = (now or utcnow()) - timedelta(seconds=settle_s)
    yield from _settled([event_from_row(r) for r in rows], after_id, cutoff)


def _settled(
    events: Sequence[OutboxEvent], after_id: int, cutoff: datetime
) -> Iterator[OutboxEvent]:
    expected = after_id + 1
    for event in events:
        young = event.created_at is not None and event.created_at > cutoff
        if event.id != expected and young:
            return  # an id below this one may still be committing: wait for it
        yield event
        expected = event.id + 1


def latest_event_id(db: Database) -> int:
    """The newest event id, 0 when the outbox is empty (a cursor that sees everything)."""
    with db.session() as session:
        return _max_id(session)


def _max_id(session: Session) -> int:
    return int(session.scalar(select(func.max(EVENTS.c.id))) or 0)


def prune(db: Database, older_than: datetime) -> PruneResult:
    """Delete events created before ``older_than``, and published events that every
    enabled webhook's cursor has passed; never the newest event. Idempotent."""
    with db.session() as session:
        newest = _max_id(session)
        done = EVENTS.c.published_at.is_not(None)
        floor = session.scalar(
            select(func.min(WEBHOOKS.c.cursor_event_id)).where(WEBHOOKS.c.enabled.is_(True))
        )
        if floor is not None:
            done = done & (EVENTS.c.id <= floor)
        stmt = delete(EVENTS).where(
            EVENTS.c.id < newest, or_(EVENTS.c.created_at < older_than, done)
        )
        deleted = session.connection().execute(stmt).rowcount
        remaining = int(session.scalar(select(func.count()).select_from(EVENTS)) or 0)
    return PruneResult(deleted=deleted, remaining=remaining)


_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> timedelta:
    """``"7d"``, ``"12h"``, ``"90m"``, ``"3600"`` (seconds) as a timedelta; ValueError else."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _UNITS_S else "s"
    number = value[:-1] if value[-1:] in _UNITS_S else value
    if not number.isdigit():
        raise ValueError(f"not a duration: {text!r} (use e.g. 7d, 12h, 90m, 3600)")
    return timedelta(seconds=int(number) * _UNITS_S[unit])
