"""Corporation jobs: `killsync queue` queues corporations, `worker` syncs them.

On both deployments (SQLite + the database queue, PostgreSQL + RabbitMQ and the crossings),
against the simulator over real HTTP: the corporations' lists end up stored exactly, no
body is fetched twice across the characters' and the corporations' syncs, a corporation
without a director costs nothing until a roles check is due, and the broker keeps one job
per list (a corporation and a character with the same id are two lists).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from killcli.accounts import CORPORATION_LOGIN_SCOPES
from killcli.cadence import parse_cadence
from killcli.corporations import set_corporation_enabled
from killcli.db import Database
from killcli.db.models import Corporation, CorporationDirector, CorporationStatus
from killcli.db.types import utcnow
from killcli.killmail import canonical_json
from killcli.queue.jobs import Job
from killcli.scheduler import run_queue
from killcli.worker import JobReport
from tests.pipeline import Pipeline
from tests.sync.test_corporation_sync import SMALL
from tests.sync.test_sync_engine import assert_matches_ground_truth, exported

CORP_ROUTE = "/corporations/{corporation_id}/killmails/recent"


def corporation_pipeline(pipeline: Any) -> tuple[Pipeline, list[int]]:
    """Every character logged in with the corporation scopes, their roles checked."""
    p: Pipeline = pipeline("smoke", **SMALL)
    ids = list(p.sim.world.ground_truth())
    for cid in ids:
        p.runtime.accounts.add_refresh_token(
            p.sim.issue_refresh_token(cid, scopes=CORPORATION_LOGIN_SCOPES)
        )
    p.runtime.corporations.check_due()
    return p, ids


def expire_roles_checks(db: Database, corporation_id: int) -> None:
    with db.session() as s:
        s.execute(
            update(CorporationDirector)
            .where(CorporationDirector.corporation_id == corporation_id)
            .values(roles_expires_at=utcnow() - timedelta(seconds=1))
        )


def assert_corporation_stored_exactly(p: Pipeline, corporation_id: int) -> None:
    truth = set(p.sim.world.corporation_ground_truth()[corporation_id])
    mine = exported(p.db, corporation_id=corporation_id)
    assert set(mine) == truth
    for kid, body in mine.items():
        assert canonical_json(body) == canonical_json(p.sim.world.body(kid))


def test_queue_then_worker_syncs_characters_and_corporations_once(
    pipeline: Any, db: Database
) -> None:
    p, ids = corporation_pipeline(pipeline)
    corporations = set(p.sim.world.corporation_ground_truth())
    assert len(corporations) == 2
    first = run_queue(db, p.broker)
    assert {c.corporation_id for c in first.corporations} == corporations
    assert {c.reason for c in first.corporations} == {"new"}
    assert first.published == len(ids) + 2 and first.lists_due == len(ids) + 2
    assert p.broker.queued_corporation_ids() == corporations
    assert p.broker.queued_character_ids() == set(ids)
    assert run_queue(db, p.broker).published == 0  # one job per list
    reports: list[JobReport] = []
    result = p.drain(on_report=reports.append)
    assert result.done == len(ids) + 2
    corp_reports = [r for r in reports if r.owner.startswith("corporation ")]
    assert {r.status for r in corp_reports} == {"ok"}
    assert all(r.name for r in corp_reports)  # the corporation's name, from ESI
    assert_matches_ground_truth(p.sim, db)  # every character's own list too
    for corporation_id in corporations:
        assert_corporation_stored_exactly(p, corporation_id)
    assert max(p.sim.stats.snapshot().body_fetches.values()) == 1  # no body twice
    again = run_queue(db, p.broker)  # every list is cached: nothing is due
    assert (again.due, again.corporations, again.published) == ([], [], 0)
    with db.session() as s:
        synced = s.scalars(select(Corporation).where(Corporation.last_sync_at.is_not(None)))
        assert {c.corporation_id for c in synced} == corporations


def test_a_corporation_without_a_director_costs_nothing_until_a_check_is_due(
    pipeline: Any, db: Database
) -> None:
    p, _ = corporation_pipeline(pipeline)
    corporations = p.sim.world.corporations()
    b = min(corporations, key=lambda c: len(corporations[c].director_ids))
    [boss] = corporations[b].director_ids
    p.sim.world.set_roles(boss, [])  # the only director of B loses the role
    expire_roles_checks(db, b)
    p.runtime.corporations.check_due()
    with db.session() as s:
        row = s.get(Corporation, b)
        assert row is not None and row.status == CorporationStatus.NO_DIRECTOR
    first = run_queue(db, p.broker)
    assert b not in {c.corporation_id for c in first.corporations}  # its check holds
    p.drain()
    expire_roles_checks(db, b)  # an hour later: the check is due
    due = run_queue(db, p.broker)
    assert [(c.corporation_id, c.reason) for c in due.corporations] == [(b, "directors check")]
    reports: list[JobReport] = []
    before = p.sim.stats.snapshot().count(CORP_ROUTE)
    p.drain(on_report=reports.append)
    assert [(r.status, r.outcome) for r in reports] == [("no_director", "done")]
    assert p.sim.stats.snapshot().count(CORP_ROUTE) == before  # no list request
    assert run_queue(db, p.broker).corporations == []
    p.sim.world.set_roles(boss, ["Director"])  # the role is back
    expire_roles_checks(db, b)
    assert [c.corporation_id for c in run_queue(db, p.broker).corporations] == [b]
    reports.clear()
    p.drain(on_report=reports.append)
    assert [r.status for r in reports] == ["ok"]
    assert_corporation_stored_exactly(p, b)


def test_a_corporation_disabled_after_queueing_is_done_without_a_request(
    pipeline: Any, db: Database
) -> None:
    p, _ = corporation_pipeline(pipeline)
    a = sorted(p.sim.world.corporations())[0]
    assert run_queue(db, p.broker, corporation_ids=[a]).published == 1
    set_corporation_enabled(db, a, enabled=False)
    reports: list[JobReport] = []
    p.drain(on_report=reports.append)
    assert [(r.owner, r.status, r.outcome) for r in reports] == [
        (f"corporation {a}", "disabled", "done")
    ]
    assert p.sim.stats.snapshot().count(CORP_ROUTE) == 0
    assert a not in {c.corporation_id for c in run_queue(db, p.broker).corporations}  # disabled


def test_one_job_per_list_a_corporation_and_a_character_with_one_id_are_two(
    pipeline: Any, db: Database
) -> None:
    p, _ = corporation_pipeline(pipeline)
    corp = sorted(p.sim.world.corporations())[0]
    jobs = [Job.for_corporation(corp), Job.for_corporation(corp), Job.new(corp)]
    assert p.broker.publish(jobs) == 2
    assert p.broker.publish([Job.for_corporation(corp)]) == 0
    assert p.broker.queued_corporation_ids() == {corp}
    assert p.broker.queued_character_ids() == {corp}
    assert p.broker.queued_owner_keys() == {str(corp), f"corporation:{corp}"}


def test_the_adaptive_cadence_applies_to_corporations(pipeline: Any, db: Database) -> None:
    p, _ = corporation_pipeline(pipeline)
    run_queue(db, p.broker)
    p.drain()
    a, b = sorted(p.sim.world.corporations())
    now = utcnow() + timedelta(minutes=10)  # both lists' caches (300 s) have passed
    with db.session() as s:  # A's newest killmail is 40 days old, B's fresh
        for corporation_id, age in ((a, timedelta(days=40)), (b, timedelta(0))):
            s.execute(
                update(Corporation)
                .where(Corporation.corporation_id == corporation_id)
                .values(newest_killmail_at=now - age)
            )
    cadence = parse_cadence("7d=1h,30d=4h")
    due = run_queue(db, p.broker, now=now, cadence=cadence, dry_run=True)
    assert [(c.corporation_id, c.reason) for c in due.corporations] == [(b, "cache expired")]
    later = run_queue(db, p.broker, now=now + timedelta(hours=5), cadence=cadence, dry_run=True)
    tiers = {c.corporation_id: (c.reason, c.tier) for c in later.corporations}
    assert tiers == {a: ("cadence", "30d=4h"), b: ("cache expired", "base")}
