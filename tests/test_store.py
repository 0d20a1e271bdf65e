"""The write path on SQLite and PostgreSQL: idempotent, concurrent-safe, lossless."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from killcli.db import Database
from killcli.db.models import Attacker, Character, CharacterStatus, Item, Killmail
from killcli.db.store import (
    COPY_MIN_ROWS,
    existing_killmail_ids,
    iter_killmail_bodies,
    link_characters,
    save_killmails,
)
from killcli.killmail import canonical_json, parse_killmail
from tests.factories import killmail


def rows(*ids: int, **options: object) -> list:  # type: ignore[type-arg]
    return [parse_killmail(killmail(i, **options)) for i in ids]  # type: ignore[arg-type]


def counts(db: Database) -> tuple[int, int, int]:
    with db.session() as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(m)) for m in (Killmail, Attacker, Item)
        )


def test_save_is_idempotent(db: Database) -> None:
    with db.session() as s:
        first = save_killmails(s, rows(1, 2, 3))
    with db.session() as s:
        second = save_killmails(s, rows(2, 3, 4) + rows(4))
    assert first.new_ids == (1, 2, 3)
    assert second.new_ids == (4,)
    assert set(second.already_ids) == {2, 3}
    assert second.duplicates_in_batch == 1
    assert counts(db) == (4, 40, 4 * 25 + 4 * 3 * 3)


def test_concurrent_saves_of_the_same_killmails(db: Database) -> None:
    batch = list(range(100, 160))
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        try:
            barrier.wait()
            with db.session() as s:
                results.append(save_killmails(s, rows(*batch, attackers=3, items=5)).new)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(results) == len(batch)
    assert counts(db)[0:2] == (60, 180)


def test_character_statuses_are_stored_as_the_strings_they_always_were(db: Database) -> None:
    """``CharacterStatus`` changed the code, not the data: no migration, old rows read."""
    assert [s.value for s in CharacterStatus] == ["active", "needs_login", "disabled"]
    with db.session() as s:
        s.add(Character(character_id=1, name="new", owner_hash="x"))  # the default
        s.add(Character(character_id=2, name="off", owner_hash="x", status="disabled"))
    with db.session() as s:
        s.execute(text("UPDATE characters SET status = 'needs_login' WHERE character_id = 2"))
    with db.session() as s:
        raw: dict[int, str] = {
            r.character_id: r.status
            for r in s.execute(text("SELECT character_id, status FROM characters"))
        }
        loaded = {c.character_id: c.status for c in s.scalars(select(Character))}
        only_active = s.scalars(
            select(Character.character_id).where(Character.status == CharacterStatus.ACTIVE)
        ).all()
    assert raw == {1: "active", 2: "needs_login"} and type(raw[1]) is str
    assert loaded == {1: CharacterStatus.ACTIVE, 2: CharacterStatus.NEEDS_LOGIN}
    assert only_active == [1]


def test_export_by_character_and_since(db: Database) -> None:
    with db.session() as s:
        s.add(Character(character_id=2**31 + 1, name="[b]Boss[/b]", owner_hash="x"))
        s.flush()
        save_killmails(s, rows(10, 11, 12))
        link_characters(s, [(2**31 + 1, 11), (2**31 + 1, 12), (2**31 + 1, 12)])
    with db.session() as s:
        mine = [b["killmail_id"] for b in iter_killmail_bodies(s, character_id=2**31 + 1)]
        since = datetime(2026, 12, 1, tzinfo=UTC)
        recent = [b["killmail_id"] for b in iter_killmail_bodies(s, since=since)]
        assert existing_killmail_ids(s, [10, 13, 12]) == {10, 12}
    assert mine == [11, 12]
    assert recent == [11]  # 11 -> December, 10 -> November, 12 -> January


def test_export_reads_in_chunks_in_id_order(db: Database) -> None:
    ids = [2**40 + i for i in range(0, 70, 3)]
    with db.session() as s:
        save_killmails(s, rows(*reversed(ids), attackers=2, items=2))
    with db.session() as s:
        out = list(iter_killmail_bodies(s, chunk=7))
    assert [b["killmail_id"] for b in out] == ids
    assert out[5] == killmail(ids[5], attackers=2, items=2)


def test_times_are_utc_aware(db: Database) -> None:
    with db.session() as s:
        save_killmails(s, rows(20))
    with db.session() as s:
        stored = s.get(Killmail, 20)
        assert stored is not None
        assert stored.killmail_time.tzinfo is not None
        assert stored.killmail_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_a_large_batch_round_trips_exactly(db: Database) -> None:
    """Enough children for PostgreSQL's COPY path, with unknown fields and nulls in them."""
    bodies = [killmail(i, attackers=12, items=30) for i in range(100, 120)]
    for n, body in enumerate(bodies):
        body["attackers"][0]["future_field"] = {"nested": [n, None, "ünïcode"]}
        body["victim"]["items"][1]["new_flag"] = None
        body["attackers"][1].pop("corporation_id", None)
    batch = [parse_killmail(body) for body in bodies]
    assert sum(len(r.attackers) for r in batch) > COPY_MIN_ROWS
    with db.session() as s:
        assert save_killmails(s, batch).new == 20
    with db.session() as s:
        exported = list(iter_killmail_bodies(s))
    assert [canonical_json(b) for b in exported] == [canonical_json(b) for b in bodies]
    # and a second save of the same batch writes no children twice
    before = counts(db)
    with db.session() as s:
        assert save_killmails(s, batch).new == 0
    assert counts(db) == before


def test_one_refused_killmail_costs_only_itself(db: Database) -> None:
    """isolate=True: the batch fails, is retried one by one, and 60 of 61 are stored."""
    batch = rows(*range(300, 361), attackers=3, items=2)
    batch[30].attackers[1]["damage_done"] = None  # NOT NULL on both databases
    with db.session() as s:
        result = save_killmails(s, batch, isolate=True)
        assert existing_killmail_ids(s, [300, 330]) == {300}  # the transaction goes on
    assert len(result.new_ids) == 60 and 330 not in result.new_ids
    assert [r.killmail_id for r in result.rejected] == [330]
    assert "damage_done" in result.rejected[0].reason
    assert counts(db)[0] == 60
    with db.session() as s:  # a rerun: the 60 are already there, the bad one refused again
        again = save_killmails(s, batch, isolate=True)
    assert again.new == 0 and again.already == 60 and len(again.rejected) == 1


def test_without_isolation_a_refused_killmail_fails_the_batch(db: Database) -> None:
    batch = rows(400, 401)
    batch[1].attackers[0]["damage_done"] = None
    with pytest.raises(IntegrityError), db.session() as s:
        save_killmails(s, batch)
    assert counts(db)[0] == 0


def test_year_one_round_trips(db: Database) -> None:
    body = killmail(500)
    body["killmail_time"] = "0001-01-01T00:00:00Z"
    with db.session() as s:
        save_killmails(s, [parse_killmail(body)])
    with db.session() as s:
        assert next(iter_killmail_bodies(s))["killmail_time"] == "0001-01-01T00:00:00Z"
