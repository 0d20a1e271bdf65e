"""`killsync watch`: the outbox and RabbitMQ modes, through the real CLI entry point."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from killcli.db import Database
from killcli.events.outbox import OutboxEvent
from killcli.events.relay import relay_pending
from killcli.events.watch import StopReason, WatchOptions, watch
from tests.conftest import REPO, CliResult, DbTarget
from tests.events.conftest import BindQueue, add_events, make_payload

MARKUP_NAME = "[b]Boss[/b] @everyone <@123> :smile:"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_target: DbTarget, db: Database) -> None:
    monkeypatch.setenv("KILLSYNC_DATABASE_URL", db_target.url)


class Writer:
    """Writes a new event every `every_s` in a thread (and relays it) until stopped."""

    def __init__(
        self,
        db: Database,
        now: datetime,
        relay: Callable[[], object] | None = None,
        *,
        victim: str = "Fresh Victim",
        every_s: float = 0.2,
    ) -> None:
        self.db, self.now, self.relay, self.victim, self.every_s = db, now, relay, victim, every_s
        self.stop = threading.Event()
        self.written: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        killmail_id = 1000
        while not self.stop.wait(self.every_s):
            killmail_id += 1
            add_events(self.db, [make_payload(killmail_id, self.now, victim=self.victim)])
            self.written.append(killmail_id)
            if self.relay is not None:
                self.relay()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_watch_outbox_prints_an_event_written_after_it_started(
    cli: Callable[..., CliResult], env: None, db: Database, now: datetime
) -> None:
    add_events(db, [make_payload(1, now, victim="Old Victim")])
    with Writer(db, now, victim=MARKUP_NAME) as writer:
        result = cli("watch", "--max-events", "1", "--timeout", "10")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert f"{MARKUP_NAME} (Rifter) killed by Final Blow" in lines[0]  # verbatim, no markup
    assert "in Jita" in lines[0]
    assert any(lines[0].endswith(f"killmail {k}") for k in writer.written)
    assert "Old Victim" not in result.stdout
    assert "watching the database outbox" in result.stderr


def test_watch_json_from_start_with_a_character_filter(
    cli: Callable[..., CliResult], env: None, db: Database, now: datetime
) -> None:
    add_events(
        db,
        [
            make_payload(1, now, character_id=11),
            make_payload(2, now),
            make_payload(3, now, character_id=11, victim=MARKUP_NAME),
        ],
    )
    result = cli("watch", "--json", "--from-start", "--character", "11", "--timeout", "1")
    assert result.exit_code == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["payload"]["killmail_id"] for o in objects] == [1, 3]
    assert objects[1]["payload"]["victim"]["character_name"] == MARKUP_NAME
    assert {o["type"] for o in objects} == {"killmail.saved"}
    assert {o["version"] for o in objects} == {1}
    assert objects[0]["id"] < objects[1]["id"]


def test_watch_times_out_quietly(cli: Callable[..., CliResult], env: None) -> None:
    started = time.monotonic()
    result = cli("watch", "--timeout", "0.5")
    assert result.exit_code == 0 and result.stdout == ""
    assert 0.4 < time.monotonic() - started < 5


@pytest.mark.rabbitmq
def test_watch_rabbitmq_prints_a_relayed_event(
    cli: Callable[..., CliResult],
    env: None,
    db: Database,
    now: datetime,
    rabbit_url: str,
    exchange: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KILLSYNC_BROKER_URL", rabbit_url)

    def relay() -> object:
        return relay_pending(db, rabbit_url, exchange=exchange)

    with Writer(db, now, relay, victim=MARKUP_NAME) as writer:
        result = cli("watch", "--exchange", exchange, "--max-events", "1", "--timeout", "10")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and MARKUP_NAME in lines[0]
    assert any(lines[0].endswith(f"killmail {k}") for k in writer.written)
    assert f"watching RabbitMQ exchange {exchange}" in result.stderr
    assert "guest:guest" not in result.stderr


@pytest.mark.rabbitmq
def test_watch_rabbitmq_from_start_replays_then_follows_without_duplicates(
    cli: Callable[..., CliResult],
    env: None,
    db: Database,
    now: datetime,
    rabbit_url: str,
    exchange: str,
    bind_queue: BindQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KILLSYNC_BROKER_URL", rabbit_url)
    add_events(db, [make_payload(1, now), make_payload(2, now)])

    def relay() -> object:
        return relay_pending(db, rabbit_url, exchange=exchange)

    with Writer(db, now, relay):
        result = cli(
            "watch",
            "--json",
            "--from-start",
            "--exchange",
            exchange,
            "--max-events",
            "4",
            "--timeout",
            "10",
        )
    assert result.exit_code == 0, result.stderr
    ids = [json.loads(line)["payload"]["killmail_id"] for line in result.stdout.splitlines()]
    assert ids[:2] == [1, 2] and len(ids) == 4 and len(set(ids)) == 4  # relayed 1, 2 not twice


class ListSource:
    """A scripted source: batches handed out in order, then nothing."""

    def __init__(self, batches: list[list[OutboxEvent]]) -> None:
        self.batches = batches

    def next_batch(self, wait_s: float, stop: threading.Event) -> Sequence[OutboxEvent]:
        if self.batches:
            return self.batches.pop(0)
        stop.wait(wait_s)
        return []

    def close(self) -> None:
        return None


def test_watch_drops_redelivered_ids_and_other_event_types(now: datetime) -> None:
    e1 = OutboxEvent(1, "killmail.saved", make_payload(1, now))
    other = OutboxEvent(2, "character.added", {})
    e3 = OutboxEvent(3, "killmail.saved", make_payload(3, now))
    shown: list[int] = []
    result = watch(
        ListSource([[e1, other], [e1, e3]]),
        lambda e: shown.append(e.id),
        WatchOptions(timeout_s=0.3),
        threading.Event(),
    )
    assert shown == [1, 3]
    assert (result.duplicates, result.reason) == (1, StopReason.TIMEOUT)


def test_watch_stops_when_asked(now: datetime) -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    result = watch(ListSource([]), lambda e: None, WatchOptions(), stop)
    assert result.reason is StopReason.STOPPED


@pytest.fixture
def watch_process(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    environ = dict(
        os.environ,
        KILLSYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}",
        KILLSYNC_HOME=str(tmp_path / "home"),
    )
    # watch only reads: it needs an existing database (it never creates one).
    subprocess.run(
        [sys.executable, "-m", "killcli", "db", "upgrade"],
        cwd=REPO,
        env=environ,
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "killcli", "watch"],
        cwd=REPO,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_watch_with_exit_0(
    watch_process: subprocess.Popen[str], sig: signal.Signals
) -> None:
    assert watch_process.stderr is not None
    ready, _, _ = select.select([watch_process.stderr], [], [], 20)
    assert ready, "watch did not start"
    assert "watching" in watch_process.stderr.readline()
    watch_process.send_signal(sig)
    assert watch_process.wait(timeout=10) == 0
