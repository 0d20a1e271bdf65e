"""queue -> worker -> stats against the simulator, on both brokers and both databases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from killcli.config import load_settings
from killcli.db import Database
from killcli.db.models import (
    Attacker,
    Character,
    Killmail,
    Lease,
    PendingKillmail,
    SyncRun,
)
from killcli.db.models import Job as JobRow
from killcli.db.store import iter_killmail_bodies
from killcli.db.types import utcnow
from killcli.events.hookconfig import add_webhook, get_webhook
from killcli.events.outbox import latest_event_id
from killcli.killmail import canonical_json
from killcli.queue import Job, open_broker
from killcli.queue.base import ConsumeResult
from killcli.queue.leases import character_lease
from killcli.runtime import build_runtime
from killcli.scheduler import run_queue
from killcli.secrets import make_cipher
from killcli.worker import JobReport, Worker
from killsim import FaultPlan, SimServer
from killsim.scenario import ESI_BUCKETS
from tests.conftest import REPO, CliResult, DbTarget, sim_environ, unavailable
from tests.events.chat import ChatServer
from tests.pipeline import RABBIT_URL, Pipeline, require_rabbitmq

Cli = Callable[..., CliResult]


def assert_ground_truth_stored_once(sim: SimServer, db: Database) -> None:
    truth = sim.world.ground_truth()
    unique = set().union(*map(set, truth.values()))
    with db.session() as s:
        stored = {b["killmail_id"]: b for b in iter_killmail_bodies(s)}
        attackers = s.scalar(select(func.count()).select_from(Attacker))
        killmails = s.scalar(select(func.count()).select_from(Killmail))
    assert set(stored) == unique
    assert killmails == len(unique)
    assert attackers == sum(len(b["attackers"]) for b in stored.values())
    for kid, body in stored.items():
        assert canonical_json(body) == canonical_json(sim.world.body(kid))


def test_queue_then_worker_stores_everything_once(pipeline: Any, db: Database) -> None:
    p = pipeline("smoke")
    ids = p.add_characters()
    first = run_queue(db, p.broker)
    second = run_queue(db, p.broker)  # a second cron run before the worker: nothing new
    assert first.published == len(ids)
    assert {c.reason for c in first.due} == {"new"}
    assert second.published == 0
    assert p.broker.stats().ready == len(ids)
    result = p.drain()
    assert result.done == len(ids)
    assert_ground_truth_stored_once(p.sim, db)
    assert max(p.sim.stats.snapshot().body_fetches.values()) == 1
    assert run_queue(db, p.broker).published == 0  # lists are cached: nobody is due
    assert p.broker.stats().ready == 0


LIST = "/characters/{character_id}/killmails/recent"


def _runs_since(db: Database, since: Any) -> dict[int, Any]:
    with db.session() as s:
        runs = s.scalars(select(SyncRun).where(SyncRun.started_at >= since))
        return {r.character_id: r for r in runs if r.character_id is not None}


def test_a_resync_settles_what_one_request_can_and_hands_the_rest_to_the_engine(
    pipeline: Any, db: Database
) -> None:
    """The quick path (killcli.sync.quick): a 304 is one request and shared transactions;
    a list that changed goes to the engine with its page 1 (not asked for twice), and a
    character with a pending body due goes to the engine, which retries it."""
    p = pipeline("smoke", characters=12, killmails=120, list_cache_s=1)
    ids = p.add_characters()
    run_queue(db, p.broker)
    p.drain()
    changed, with_pending = ids[0], ids[1]
    p.sim.world.add_kill(victim=changed)
    with db.session() as s:  # a body retry that is due (of a killmail it already has)
        kid = s.scalars(select(Killmail.killmail_id)).first()
        s.add(
            PendingKillmail(
                killmail_id=kid,
                killmail_hash="0" * 40,
                character_id=with_pending,
                reason="test",
                attempts=1,
                first_seen_at=utcnow(),
                next_attempt_at=utcnow(),
            )
        )
    time.sleep(1.2)  # every list's cache expired
    since, before = utcnow(), p.sim.stats.snapshot()
    assert run_queue(db, p.broker, all_active=True).published == len(ids)
    worker = Worker(p.runtime, p.broker)
    result = worker.run(concurrency=8, stop=threading.Event(), drain=True)
    after = p.sim.stats.snapshot()
    assert result.done == len(ids)
    runs = _runs_since(db, since)
    assert {cid: r.status for cid, r in runs.items()} == {
        cid: "ok" if cid == changed else "not_modified" for cid in ids
    }
    assert worker.quick.finishes.items == len(ids) - 2  # all but the two the engine ran
    assert after.count(LIST, 304) - before.count(LIST, 304) == len(ids) - 1
    # The changed list's page 1 was fetched once, by the quick try, and used by the engine.
    assert after.count(LIST, 200) - before.count(LIST, 200) == runs[changed].figures["pages"]
    with db.session() as s:
        assert s.get(PendingKillmail, kid) is None  # the engine retried it: stored, linked
    assert_ground_truth_stored_once(p.sim, db)


def test_a_quick_try_that_fails_is_recorded_retried_and_leaves_no_lease(
    pipeline: Any, db: Database
) -> None:
    p = pipeline("smoke", characters=3, killmails=30, list_cache_s=1)
    ids = p.add_characters()
    run_queue(db, p.broker)
    p.drain()
    time.sleep(1.2)
    failing = ids[0]
    p.sim.faults.fail_list(failing, status=500, times=4)  # every attempt of one request
    since = utcnow()
    run_queue(db, p.broker, all_active=True)
    first = p.drain()
    assert first.retried == 1 and first.done == len(ids) - 1
    with db.session() as s:
        assert s.get(Lease, character_lease(failing)) is None  # given up with the run record
        failed = s.scalars(
            select(SyncRun).where(SyncRun.character_id == failing, SyncRun.started_at >= since)
        ).all()
        assert [r.status for r in failed] == ["failed"]
        assert "500" in (failed[0].error or "")
        assert "500" in (s.get(Character, failing).last_error or "")  # type: ignore[union-attr]
    time.sleep(1.2)  # the retry's delay
    assert p.drain().done == 1
    with db.session() as s:
        assert s.get(Character, failing).last_error is None  # type: ignore[union-attr]
    assert_ground_truth_stored_once(p.sim, db)


def test_a_job_whose_list_cache_is_fresh_costs_no_request(pipeline: Any, db: Database) -> None:
    p = pipeline("smoke", characters=6, killmails=40)  # lists cached for 300 s
    ids = p.add_characters()
    run_queue(db, p.broker)
    p.drain()
    since, before = utcnow(), p.sim.stats.snapshot().total
    run_queue(db, p.broker, all_active=True)
    assert p.drain().done == len(ids)
    assert p.sim.stats.snapshot().total == before
    assert {r.status for r in _runs_since(db, since).values()} == {"cached"}
    with db.session() as s:
        assert all(
            c.last_sync_at is not None and c.last_sync_at >= since
            for c in s.scalars(select(Character))
        )


def test_the_worker_log_counts_syncs_that_found_nothing_instead_of_a_line_each(
    pipeline: Any,
    db: Database,
    db_target: DbTarget,
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = pipeline("smoke", characters=4, killmails=30)  # lists cached for 300 s
    ids = p.add_characters()
    run_queue(db, p.broker)
    p.drain()
    env = {
        **sim_environ(p.sim, tmp_path / "home", db_target.url),
        "KILLSYNC_BROKER_URL": p.settings.broker_url or "database",
        "KILLSYNC_QUEUE_NAME": p.settings.queue_name,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli("queue", "--all", "--one-line").exit_code == 0
    quiet = cli("worker", "--drain")
    assert quiet.exit_code == 0, quiet.stderr
    assert f"{len(ids)} syncs found nothing new" in quiet.stderr
    assert f"({len(ids)} cached)" in quiet.stderr
    assert "-> done" not in quiet.stderr
    queued = cli("queue", "--all", "--quiet")  # the spelling before 0.2 still works
    assert queued.exit_code == 0
    assert queued.stdout.startswith(f"queued {len(ids)} of {len(ids)} due")
    verbose = cli("-v", "worker", "--drain")
    assert verbose.exit_code == 0, verbose.stderr
    assert verbose.stderr.count("cached, new 0, pending 0") == len(ids)
    assert "found nothing new" not in verbose.stderr


def test_the_ack_never_waits_for_a_slow_webhook(pipeline: Any, db: Database) -> None:
    """Webhooks post on the event pump's thread: while a webhook holds its answer, one sync
    at a time still settles every job (the old pump ran between commit and ack)."""
    p = pipeline("smoke", characters=3, killmails=30)
    ids = p.add_characters()
    chat = ChatServer().start()
    try:
        hook = add_webhook(
            db,
            make_cipher(p.settings, db),
            "discord",
            chat.discord_url(),
            allow_insecure=True,
            max_age_s=10 * 365 * 86400,  # the simulator's kills are of any age
        )
        chat.gate.clear()  # the webhook answers nothing until the test says so
        run_queue(db, p.broker)
        reports: list[JobReport] = []
        drained: list[ConsumeResult] = []
        thread = threading.Thread(
            target=lambda: drained.append(p.drain(concurrency=1, on_report=reports.append))
        )
        thread.start()
        deadline = time.monotonic() + 60
        while len(reports) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        held = chat.arrived, list(chat.posted)
        chat.gate.set()
        thread.join(60)
        assert len(reports) == len(ids)  # every job settled while the webhook was held
        assert held[0] >= 1 and held[1] == []  # a post was waiting, none had an answer
        assert drained[0].done == len(ids)
        assert chat.posted  # the held events left once the webhook answered
        delivered = get_webhook(db, make_cipher(p.settings, db), hook.id)
        assert delivered.cursor_event_id == latest_event_id(db)
    finally:
        chat.gate.set()
        chat.stop()


def test_removed_character_job_is_dead_lettered(pipeline: Any, db: Database) -> None:
    p = pipeline("smoke", characters=2, killmails=20)
    ids = p.add_characters()
    p.broker.publish([Job.new(999_999)])
    p.drain()
    dead = p.broker.dead_letters()
    assert [d.character_id for d in dead] == [999_999]
    assert "not tracked" in dead[0].reason
    assert len(ids) == 2
    assert p.broker.stats().dead_letters == 1


def test_revoked_character_is_not_retried_and_not_queued_again(pipeline: Any, db: Database) -> None:
    p = pipeline("smoke", characters=2, killmails=20)
    ids = p.add_characters()
    p.sim.revoke(ids[0])
    with db.session() as s:  # its access token is stale: the sync must refresh
        s.execute(update(Character).values(access_expires_at=utcnow()))
    run_queue(db, p.broker)
    result = p.drain()
    assert result.done == 2 and result.retried == 0
    due = run_queue(db, p.broker, dry_run=True)
    assert ids[0] not in {c.character_id for c in due.due}


def test_one_character_is_never_synced_twice_at_once(pipeline: Any, db: Database) -> None:
    p = pipeline("smoke", characters=2, killmails=60, faults=FaultPlan(latency_ms=30))
    cid = p.add_characters()[0]
    worker_a, worker_b = Worker(p.runtime, p.broker), Worker(p.runtime, p.broker)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def run(worker: Worker) -> None:
        barrier.wait()
        outcomes.append(worker.handle(Job.new(cid)).kind.value)

    threads = [threading.Thread(target=run, args=(w,)) for w in (worker_a, worker_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["done", "retry"]


def test_chaos_run_ends_with_every_killmail_once(pipeline: Any, db: Database) -> None:
    p = pipeline(
        "chaos",
        killmails=120,
        faults=replace(
            FaultPlan(),
            server_error_rate={"list": 0.05, "body": 0.1},
            latency_ms=5,
            jitter_ms=5,
            stall_rate=0.01,
            stall_s=4,
            malformed_rate=0.03,
            truncated_rate=0.03,
            downtime_s=(1.0, 2.5),
        ),
    )
    p.add_characters()
    want = len(set().union(*map(set, p.sim.world.ground_truth().values())))
    for _ in range(10):
        run_queue(db, p.broker)
        p.drain()
        with db.session() as s:  # pretend the pending backoff has passed
            s.execute(update(PendingKillmail).values(next_attempt_at=utcnow()))
            pending = s.scalar(select(func.count()).select_from(PendingKillmail))
            stored = s.scalar(select(func.count()).select_from(Killmail))
        if not pending and stored == want and not p.broker.stats().delayed:
            break
        time.sleep(1.2)  # delayed retries (failed lists, downtime) come due
    stats = p.sim.stats.snapshot()
    assert stats.count(status=420) == 0
    assert_ground_truth_stored_once(p.sim, db)


# -- the worker process: signals and crashes -----------------------------------------------


def queue_everyone(sim: SimServer, db: Database, env: dict[str, str]) -> None:
    """Add every simulated character and queue them, as an operator would."""
    settings = load_settings(environ=env)
    runtime = build_runtime(settings, db)
    try:
        for cid in sim.world.ground_truth():
            runtime.accounts.add_refresh_token(sim.issue_refresh_token(cid))
    finally:
        runtime.close()
    with open_broker(settings, db) as broker:
        run_queue(db, broker)


def wait_for_first_killmail(db: Database, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db.session() as s:
            if s.scalar(select(func.count()).select_from(Killmail)):
                return
        time.sleep(0.05)
    raise AssertionError("no killmail was saved in time")


def cli_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "killcli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def worker_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return cli_process(env, "worker", *args)


def held_by_the_dead(db: Database) -> tuple[int, int]:
    """Unexpired character leases and claimed jobs left in the database now."""
    now = utcnow()
    with db.session() as s:
        leases = s.scalar(
            select(func.count())
            .select_from(Lease)
            .where(Lease.name.startswith("character:"), Lease.expires_at > now)
        )
        jobs = s.scalar(select(func.count()).select_from(JobRow).where(JobRow.locked_until > now))
    return int(leases or 0), int(jobs or 0)


DEPLOYMENTS = [
    pytest.param("sqlite", "database", id="sqlite-dbqueue"),
    pytest.param(
        "postgresql",
        RABBIT_URL,
        id="postgresql-rabbitmq",
        marks=[pytest.mark.postgres, pytest.mark.rabbitmq],
    ),
]


@pytest.mark.parametrize(("db_target", "deployment_broker"), DEPLOYMENTS, indirect=["db_target"])
def test_one_round_right_after_sigkill_completes_the_data(
    start_sim: Any, db: Database, db_target: DbTarget, deployment_broker: str, tmp_path: Path
) -> None:
    """A worker SIGKILLed while it holds character leases and running jobs blocks nothing:
    one `queue` + `worker --drain` round started at once stores every killmail once,
    without waiting for a lease or a visibility timeout (the holder is a dead process of
    this host, so both are taken over at once)."""
    sim = start_sim("smoke", characters=3, killmails=150, faults=FaultPlan(latency_ms=40))
    env = sim_environ(sim, tmp_path / "home", db_target.url)
    env["KILLSYNC_BROKER_URL"] = deployment_broker
    env["KILLSYNC_QUEUE_NAME"] = f"killsync-sigkill-{os.getpid()}-{time.monotonic_ns()}"
    if deployment_broker != "database":
        require_rabbitmq()
    try:
        queue_everyone(sim, db, env)
        proc = worker_process(env, "--concurrency", "2")
        wait_for_first_killmail(db)  # it is inside two syncs now
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        killed_at = time.monotonic()
        leases, jobs = held_by_the_dead(db)
        assert leases >= 1  # the kill came mid-sync: its leases are still unexpired ...
        assert jobs >= 1 or deployment_broker != "database"  # ... and its claims
        queued = cli_process(env, "queue")
        _, err = queued.communicate(timeout=60)
        assert queued.returncode == 0, err
        again = worker_process(env, "--drain", "--concurrency", "2")
        _, err = again.communicate(timeout=120)
        elapsed = time.monotonic() - killed_at
        assert again.returncode == 0, err  # 3 would mean a job was put off (busy)
        assert "being synced by" not in err
        assert_ground_truth_stored_once(sim, db)
        assert elapsed < 60, f"data complete {elapsed:.1f} s after the kill"
    finally:
        if deployment_broker != "database":
            from killcli.queue.rabbit import RabbitBroker

            RabbitBroker(
                deployment_broker, db, queue_name=env["KILLSYNC_QUEUE_NAME"]
            ).delete_topology()


def test_first_sigterm_finishes_running_jobs_and_exits_zero(
    start_sim: Any, db: Database, db_target: DbTarget, tmp_path: Path
) -> None:
    sim = start_sim("smoke", characters=2, killmails=60, faults=FaultPlan(latency_ms=30))
    env = sim_environ(sim, tmp_path / "home", db_target.url)
    queue_everyone(sim, db, env)
    proc = worker_process(env, "--concurrency", "2")
    wait_for_first_killmail(db)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "finishing running jobs" in err
    with db.session() as s:  # the jobs it was running finished and were settled
        assert s.scalar(select(func.count()).select_from(JobRow)) == 0
    assert_ground_truth_stored_once(sim, db)
    assert out == ""  # no data on stdout: the log lines are on stderr


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.rabbitmq
def test_worker_survives_a_rabbitmq_restart(
    start_sim: Any, db: Database, db_target: DbTarget, tmp_path: Path
) -> None:
    import shutil

    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl (to restart RabbitMQ)")
    # A killmail bucket of 100 bodies per 5 s: the drain lasts ~12 s, so RabbitMQ's restart
    # (a few seconds) falls inside it however fast the worker is.
    sim = start_sim(
        "smoke",
        characters=6,
        killmails=240,
        faults=FaultPlan(latency_ms=25),
        buckets={**ESI_BUCKETS, "killmail": (200, 5)},
    )
    env = sim_environ(sim, tmp_path / "home", db_target.url)
    env["KILLSYNC_BROKER_URL"] = RABBIT_URL
    env["KILLSYNC_QUEUE_NAME"] = f"killsync-restart-{os.getpid()}-{time.monotonic_ns()}"
    p = Pipeline(sim, db, load_settings(environ=env))
    try:
        p.add_characters()
        assert run_queue(db, p.broker).published == 6
        results: list[Any] = []
        thread = threading.Thread(target=lambda: results.append(p.drain(concurrency=2)))
        thread.start()
        wait_for_first_killmail(db)
        rabbitmqctl("stop_app")
        time.sleep(1)
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        thread.join(timeout=180)
        assert not thread.is_alive()
        assert results and results[0].reconnects >= 1
        assert_ground_truth_stored_once(sim, db)
    finally:
        p.close()


def test_metrics_endpoint_reports_jobs_and_esi(pipeline: Any, db: Database) -> None:
    import socket

    from killcli.metrics import WorkerMetrics

    p = pipeline("smoke", characters=2, killmails=30)
    p.add_characters()
    run_queue(db, p.broker)
    metrics = WorkerMetrics()
    Worker(p.runtime, p.broker, metrics=metrics).run(
        concurrency=2, stop=threading.Event(), drain=True
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.serve(port)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'killsync_jobs_total{outcome="done"} 2.0' in text
    saved = len(set().union(*map(set, p.sim.world.ground_truth().values())))
    assert f"killsync_killmails_saved_total {float(saved)}" in text
    assert 'killsync_esi_responses{group="killmail",status="200"}' in text
    assert "killsync_sync_duration_seconds_count 2.0" in text


def test_a_worker_keeps_its_status_row_fresh_between_jobs(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose syncs wait minutes for the budget finishes no job meanwhile: its row
    is written on a timer, so `stats` still lists it."""
    import killcli.workerstatus as ws

    monkeypatch.setattr(ws, "WRITE_EVERY_S", 0.1)
    reporter = ws.StatusReporter(db, None)
    reporter.write()
    first = ws.live_workers(db)[0]["updated_at"]
    with reporter.keep_writing():
        time.sleep(0.5)
    assert ws.live_workers(db)[0]["updated_at"] > first
    reporter.remove()
    assert ws.live_workers(db) == []


def test_workers_report_their_view_of_esi_for_stats(
    pipeline: Any, db: Database, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from killcli.workerstatus import StatusReporter, live_workers

    p = pipeline("smoke", characters=2, killmails=30)
    p.add_characters()
    run_queue(db, p.broker)
    seen: list[list[dict[str, Any]]] = []
    reporter = StatusReporter(db, p.runtime.esi.limiter)
    worker = Worker(
        p.runtime, p.broker, status=reporter, on_new_killmails=lambda: seen.append(live_workers(db))
    )
    worker.run(concurrency=1, stop=threading.Event(), drain=True)
    reporter.write()  # what a running worker shows (the run removed its row on exit)
    rows = live_workers(db)
    assert [r["worker_id"] for r in rows] == [reporter.worker_id]
    esi = rows[0]["esi"]
    assert {b["bucket"] for b in esi["buckets"]} >= {"killmail"}
    assert esi["character_buckets"] == 2
    assert rows[0]["jobs_handled"] == 2
    assert seen and seen[0][0]["worker_id"] == reporter.worker_id
    for key, value in {
        "KILLSYNC_DATABASE_URL": str(db.engine.url.render_as_string(hide_password=False)),
        "KILLSYNC_BROKER_URL": p.settings.broker_url or "database",
        "KILLSYNC_QUEUE_NAME": p.settings.queue_name,
    }.items():
        monkeypatch.setenv(key, value)
    stats = json.loads(cli("stats", "--json").stdout)["data"]
    assert stats["workers"][0]["esi"]["buckets"]
    reporter.remove()
    assert live_workers(db) == []
