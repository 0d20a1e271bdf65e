"""The outbox reader and pruning, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, text, update

from killcli.db import Database
from killcli.events.outbox import (
    EVENTS,
    WEBHOOKS,
    iter_events,
    latest_event_id,
    parse_age,
    prune,
)
from tests.events.conftest import add_events, make_payload


def test_iter_events_in_order_after_an_id(db: Database, now: datetime) -> None:
    assert latest_event_id(db) == 0
    assert list(iter_events(db, 0)) == []
    add_events(db, [make_payload(k, now) for k in range(1, 8)])
    newest = latest_event_id(db)
    events = list(iter_events(db, 0, limit=5))
    assert [e.payload["killmail_id"] for e in events] == [1, 2, 3, 4, 5]
    assert [e.id for e in events] == sorted(e.id for e in events)
    rest = list(iter_events(db, events[-1].id))
    assert [e.payload["killmail_id"] for e in rest] == [6, 7]
    assert rest[-1].id == newest
    assert all(e.event_type == "killmail.saved" and e.created_at for e in events + rest)
    assert list(iter_events(db, newest)) == []


def _insert_with_id(db: Database, event_id: int, created_at: datetime) -> None:
    with db.session() as s:
        s.execute(
            insert(EVENTS).values(
                id=event_id,
                event_type="killmail.saved",
                payload={"killmail_id": event_id},
                created_at=created_at,
            )
        )


def test_reading_stops_at_a_young_gap_and_passes_an_old_one(db: Database, now: datetime) -> None:
    old = now - timedelta(minutes=5)
    for event_id in (1, 2):
        _insert_with_id(db, event_id, old)
    _insert_with_id(db, 4, old)  # 3 is missing for minutes: rolled back, pass it
    _insert_with_id(db, 6, now)  # 5 missing, 6 just written: 5 may still be committing
    assert [e.id for e in iter_events(db, 0, now=now)] == [1, 2, 4]
    assert [e.id for e in iter_events(db, 4, now=now)] == []
    later = now + timedelta(seconds=16)
    assert [e.id for e in iter_events(db, 4, now=later)] == [6]


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    with db.session() as s:
        s.execute(text("TRUNCATE events RESTART IDENTITY"))
    yield db
    db.close()


@pytest.mark.postgres
def test_event_committed_late_is_not_skipped_on_postgresql(pg_db: Database) -> None:
    """Two transactions take ids n and n+1, n+1 commits first: a reader must wait for n.
    (SQLite serializes writers, so its ids always become visible in order.)"""
    db = pg_db
    slow = db.sessions()
    slow.begin()
    slow.execute(insert(EVENTS).values(event_type="killmail.saved", payload={"n": 1}))
    add_events(db, [{"n": 2}])
    try:
        assert [e.payload for e in iter_events(db, 0)] == []
    finally:
        slow.commit()
        slow.close()
    assert [e.payload["n"] for e in iter_events(db, 0)] == [1, 2]


def test_prune_keeps_recent_unpublished_and_the_newest(db: Database, now: datetime) -> None:
    add_events(db, [make_payload(k, now) for k in range(1, 7)])
    ids = [e.id for e in iter_events(db, 0)]
    with db.session() as s:
        old = now - timedelta(days=10)
        s.execute(update(EVENTS).where(EVENTS.c.id.in_(ids[:2])).values(created_at=old))
        s.execute(update(EVENTS).where(EVENTS.c.id.in_(ids[2:4])).values(published_at=now))
        s.execute(
            update(EVENTS).where(EVENTS.c.id == ids[5]).values(created_at=old, published_at=now)
        )
    result = prune(db, now - timedelta(days=7))
    # old ones and published ones go; the newest stays although it is old and published
    assert (result.deleted, result.remaining) == (4, 2)
    assert [e.id for e in iter_events(db, 0, now=now + timedelta(hours=1))] == ids[4:]
    assert prune(db, now - timedelta(days=7)).deleted == 0


def test_prune_keeps_published_events_a_webhook_has_not_reached(
    db: Database, now: datetime
) -> None:
    add_events(db, [make_payload(k, now) for k in range(1, 6)])
    ids = [e.id for e in iter_events(db, 0)]
    with db.session() as s:
        s.execute(update(EVENTS).values(published_at=now))
        s.execute(
            insert(WEBHOOKS).values(
                kind="discord", url_enc="x", max_age_s=60, cursor_event_id=ids[1], enabled=True
            )
        )
        s.execute(
            insert(WEBHOOKS).values(
                kind="slack", url_enc="x", max_age_s=60, cursor_event_id=0, enabled=False
            )
        )
    assert prune(db, now - timedelta(days=7)).deleted == 2  # the disabled one does not count
    remaining = [e.id for e in iter_events(db, 0, now=now + timedelta(hours=1))]
    assert remaining == ids[2:]


def test_sqlite_ids_keep_growing_after_a_prune(db: Database, now: datetime) -> None:
    add_events(db, [make_payload(k, now) for k in range(1, 4)])
    newest = latest_event_id(db)
    prune(db, now + timedelta(days=1))  # everything is "old"
    assert latest_event_id(db) == newest
    add_events(db, [make_payload(9, now)])
    assert latest_event_id(db) == newest + 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800), ("12h", 43200), ("90m", 5400), ("3600", 3600), ("2w", 1209600), ("30s", 30)],
)
def test_parse_age(text: str, seconds: int) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "d", "-1d", "1.5h", "7 days"])
def test_parse_age_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_age(text)
