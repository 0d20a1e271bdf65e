"""`killsync webhooks ...` and `killsync events ...` through the real entry point."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import pytest

from killcli.db import Database
from killcli.events.outbox import latest_event_id
from tests.conftest import CliResult, DbTarget
from tests.events.chat import ChatServer
from tests.events.conftest import BindQueue, add_events, make_payload

Cli = Callable[..., CliResult]
TOKEN = "sEcReT-t0ken"
SLACK_SECRET = "sLaCkSeCrEt42"


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, db_target: DbTarget, db: Database, secret_key: str
) -> None:
    monkeypatch.setenv("KILLSYNC_DATABASE_URL", db_target.url)


def _no_secret(result: CliResult) -> None:
    for secret in (TOKEN, SLACK_SECRET):
        assert secret not in result.stdout and secret not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        f"https://discord.example.com/api/webhooks/1/{TOKEN}",
        f"http://discord.com/api/webhooks/1/{TOKEN}",
        f"https://discord.com/api/hooks/{TOKEN}",
    ],
)
def test_an_invalid_url_is_one_clear_line_and_exit_2(cli: Cli, env: None, url: str) -> None:
    result = cli("webhooks", "add", "discord", url)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("killsync: error: not a discord webhook URL")
    _no_secret(result)


def test_unknown_kind_and_unknown_id(cli: Cli, env: None) -> None:
    result = cli("webhooks", "add", "teams", f"https://x/{TOKEN}")
    assert result.exit_code == 2 and "unknown webhook kind" in result.stderr
    _no_secret(result)
    result = cli("webhooks", "remove", "99")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "killsync: error: no webhook with id 99 (see `killsync webhooks list`)"
    ]


def test_add_list_remove_never_show_the_url(cli: Cli, env: None, chat: ChatServer) -> None:
    added = cli(
        "webhooks",
        "add",
        "discord",
        "-",
        "--allow-insecure",
        "--max-age",
        "600",
        "--character",
        "77",
        stdin=chat.discord_url(TOKEN) + "\n",
    )
    assert added.exit_code == 0, added.stderr
    assert "added webhook 1: discord" in added.stderr and "/***" in added.stderr
    _no_secret(added)
    slack = cli("webhooks", "add", "slack", chat.slack_url(SLACK_SECRET), "--allow-insecure")
    assert slack.exit_code == 0, slack.stderr
    _no_secret(slack)
    table = cli("webhooks", "list")
    assert table.exit_code == 0 and "112233445566778899/***" in table.stdout
    _no_secret(table)
    listed = cli("webhooks", "list", "--json")
    _no_secret(listed)
    data = json.loads(listed.stdout)
    assert data["kind"] == "webhooks" and data["version"] == 1
    first, second = data["data"]
    assert (first["character_id"], first["max_age_s"], first["enabled"]) == (77, 600, True)
    assert second["url"].endswith("/services/***")
    assert cli("webhooks", "remove", "1").exit_code == 0
    assert [w["id"] for w in json.loads(cli("webhooks", "list", "--json").stdout)["data"]] == [2]


def test_webhooks_test_command(cli: Cli, env: None, chat: ChatServer) -> None:
    cli("webhooks", "add", "discord", chat.discord_url(TOKEN), "--allow-insecure")
    ok = cli("webhooks", "test", "1")
    assert ok.exit_code == 0 and "test message posted" in ok.stderr
    assert len(chat.posted) == 1
    chat.gone.add(TOKEN)
    gone = cli("webhooks", "test", "1")
    assert gone.exit_code == 2
    assert "HTTP 404" in gone.stderr and "disabled" in gone.stderr
    _no_secret(gone)
    assert json.loads(cli("webhooks", "list", "--json").stdout)["data"][0]["enabled"] is False


def test_deliver_once(cli: Cli, env: None, db: Database, chat: ChatServer, now: datetime) -> None:
    cli("webhooks", "add", "discord", chat.discord_url(TOKEN), "--allow-insecure")
    add_events(db, [make_payload(1, now), make_payload(2, now.replace(year=now.year - 1))])
    result = cli("webhooks", "deliver", "--once", "--json")
    assert result.exit_code == 0, result.stderr
    totals = json.loads(result.stdout)["data"]
    assert (totals["posted"], totals["skipped"], totals["failed"]) == (1, 1, 0)
    chat.gone.add(TOKEN)
    add_events(db, [make_payload(3, now)])
    result = cli("webhooks", "deliver", "--once")
    assert result.exit_code == 3 and "disabled 1" in result.stderr
    _no_secret(result)


def test_events_prune(cli: Cli, env: None, db: Database, now: datetime) -> None:
    add_events(db, [make_payload(k, now) for k in range(1, 4)])
    kept = cli("events", "prune", "--json")
    assert json.loads(kept.stdout)["data"] == {"deleted": 0, "remaining": 3}
    assert cli("events", "prune", "--older-than", "0").exit_code == 0
    assert latest_event_id(db) > 0
    bad = cli("events", "prune", "--older-than", "soon")
    assert bad.exit_code == 2 and "not a duration" in bad.stderr


def test_events_relay_needs_rabbitmq(cli: Cli, env: None) -> None:
    result = cli("events", "relay")
    assert result.exit_code == 2 and "needs RabbitMQ" in result.stderr


@pytest.mark.rabbitmq
def test_events_relay(
    cli: Cli,
    env: None,
    db: Database,
    now: datetime,
    rabbit_url: str,
    exchange: str,
    bind_queue: BindQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drain = bind_queue(exchange)
    monkeypatch.setenv("KILLSYNC_BROKER_URL", rabbit_url)
    add_events(db, [make_payload(k, now) for k in range(1, 4)])
    result = cli("events", "relay", "--exchange", exchange, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["data"] == {"published": 3}
    assert len(drain()) == 3


def test_every_command_has_an_example(cli: Cli) -> None:
    for args in (
        ["watch"],
        ["webhooks", "add"],
        ["webhooks", "list"],
        ["webhooks", "remove"],
        ["webhooks", "test"],
        ["webhooks", "deliver"],
        ["events", "prune"],
        ["events", "relay"],
    ):
        result = cli(*args, "--help")
        assert result.exit_code == 0 and "Examples:" in result.stdout, args
